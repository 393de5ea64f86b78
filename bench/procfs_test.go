package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

const statusSample = `Name:	upsink
Umask:	0022
State:	S (sleeping)
VmPeak:	 1262332 kB
VmSize:	 1262332 kB
VmHWM:	   15264 kB
VmRSS:	   14500 kB
RssAnon:	    6000 kB
`

const rollupSample = `00400000-7ffd1b5e4000 ---p 00000000 00:00 0                          [rollup]
Rss:               14500 kB
Pss:               13321 kB
Pss_Anon:           6000 kB
Pss_File:           7321 kB
`

func TestParseKB(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		keys    []string
		want    []int64
		wantErr bool
	}{
		{"status", statusSample, []string{"VmRSS:", "VmHWM:"}, []int64{14500 << 10, 15264 << 10}, false},
		{"rollup Pss not Pss_Anon", rollupSample, []string{"Pss:"}, []int64{13321 << 10}, false},
		{"missing key", statusSample, []string{"VmSwap:"}, []int64{-1}, false},
		{"kernel thread has no VmRSS", "Name:\tkthreadd\nState:\tS\n", []string{"VmRSS:"}, []int64{-1}, false},
		{"first occurrence wins", "VmRSS: 1 kB\nVmRSS: 2 kB\n", []string{"VmRSS:"}, []int64{1024}, false},
		{"no unit is bytes", "VmRSS: 77\n", []string{"VmRSS:"}, []int64{77}, false},
		{"empty value", "VmRSS:\n", []string{"VmRSS:"}, nil, true},
		{"not a number", "VmRSS: lots kB\n", []string{"VmRSS:"}, nil, true},
		{"negative", "VmRSS: -4 kB\n", []string{"VmRSS:"}, nil, true},
		{"unknown unit", "VmRSS: 4 pages\n", []string{"VmRSS:"}, nil, true},
		{"empty input", "", []string{"VmRSS:", "VmHWM:"}, []int64{-1, -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKB(strings.NewReader(tt.in), tt.keys...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestReadMemSelf(t *testing.T) {
	m, err := ReadMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Fatalf("implausible sample %+v", m)
	}
	if _, err := ReadMem(1 << 30); err == nil {
		t.Fatal("no error for a pid that cannot exist")
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want float64
		bad  bool
	}{
		{"plain", "13850 (upsink) S 1 13850 13850 0 -1 4194560 1803 0 0 0 250 130 0 0 20 0 6 0 1234 1262332 3620 18446744073709551615", 3.80, false},
		{"name with spaces and parens", "77 (a b) c)) R 1 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 1000 10 0", 0.10, false},
		{"truncated", "77 (x) R 1 77", 0, true},
		{"no name", "77 x R", 0, true},
		{"non-numeric", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a b 0 0", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatCPU([]byte(tt.in))
		if (err != nil) != tt.bad || (!tt.bad && (got < tt.want-1e-9 || got > tt.want+1e-9)) {
			t.Errorf("%s: got %v, %v; want %v bad=%v", tt.name, got, err, tt.want, tt.bad)
		}
	}
	if _, err := ReadCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestParseStatLine(t *testing.T) {
	s, err := parseStatLine([]byte("cpu  779503 41 586411 2033164 49793 0 145281 11406 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil || s != (StatCPU{User: 779503, Nice: 41, System: 586411, Idle: 2033164, IOWait: 49793, SoftIRQ: 145281, Steal: 11406}) {
		t.Fatalf("%+v %v", s, err)
	}
	if _, err := parseStatLine([]byte("cpu0 1 2 3\n")); err == nil {
		t.Fatal("no cpu line accepted")
	}
	m := machineBetween(StatCPU{User: 100, Idle: 50}, StatCPU{User: 250, System: 50, SoftIRQ: 100, IOWait: 20, Idle: 60, Steal: 10}, 2*time.Second)
	if m.Busy != 1.5 || m.IOWait != 0.1 || m.Steal != 0.05 {
		t.Fatalf("%+v", m)
	}
	if _, err := ReadStatCPU(); err != nil {
		t.Fatal(err)
	}
}
