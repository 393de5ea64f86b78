package main

import (
	"reflect"
	"testing"
)

func TestSplitDSNs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"root@tcp(127.0.0.1:3306)/upsink", []string{"root@tcp(127.0.0.1:3306)/upsink"}},
		{"a@tcp(h:1)/db,b@tcp(h:2)/db, c@unix(/s)/db", []string{"a@tcp(h:1)/db", "b@tcp(h:2)/db", "c@unix(/s)/db"}},
		{"a@tcp(h:1)/db?sql_mode=A,B,b@tcp(h:2)/db", []string{"a@tcp(h:1)/db?sql_mode=A,B", "b@tcp(h:2)/db"}},
		{",,", nil},
	} {
		if got := splitDSNs(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitDSNs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var l []string
	d := dsnList{&l}
	_ = d.Set("a@tcp(h:1)/db")
	_ = d.Set("b@tcp(h:2)/db,c@tcp(h:3)/db")
	if want := []string{"a@tcp(h:1)/db", "b@tcp(h:2)/db", "c@tcp(h:3)/db"}; !reflect.DeepEqual(l, want) {
		t.Fatalf("repeated --dsn: %q, want %q", l, want)
	}
	if d.String() != "a@tcp(h:1)/db,b@tcp(h:2)/db,c@tcp(h:3)/db" {
		t.Fatalf("String() = %q", d.String())
	}
}
