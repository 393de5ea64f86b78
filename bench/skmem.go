package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Skmem is the kernel memory of a set of TCP sockets, summed from the
// skmem:(…) fields `ss -tm` prints (bytes): r = rmem_alloc (receive queue),
// t = wmem_alloc (sent, not yet acknowledged), w = wmem_queued (send queue),
// f = forward_alloc (charged ahead), rb and tb the buffer sizes allowed.
type Skmem struct {
	Sockets int   `json:"sockets"`
	Rmem    int64 `json:"rmem_alloc"`
	Wmem    int64 `json:"wmem_alloc"`
	Queued  int64 `json:"wmem_queued"`
	Fwd     int64 `json:"fwd_alloc"`
	RcvBuf  int64 `json:"rcvbuf"`
	SndBuf  int64 `json:"sndbuf"`
}

// Charged is what the sockets hold in kernel memory: the receive queue, the
// send queue and what the kernel has charged to them ahead (rmem_alloc +
// wmem_queued + fwd_alloc; wmem_alloc is part of wmem_queued).
func (s Skmem) Charged() int64 { return s.Rmem + s.Queued + s.Fwd }

// ReadSkmem runs `ss -tmnH` for the connected TCP sockets whose local port is
// one of ports (the server's side of its connections; listeners are not
// listed) and sums their skmem.
func ReadSkmem(ports []int) (Skmem, error) {
	if len(ports) == 0 {
		return Skmem{}, errors.New("ss: no ports")
	}
	var f strings.Builder
	f.WriteString("( ")
	for i, p := range ports {
		if i > 0 {
			f.WriteString(" or ")
		}
		fmt.Fprintf(&f, "sport = :%d", p)
	}
	f.WriteString(" )")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ss", "-tmnH", f.String()).Output()
	if err != nil {
		return Skmem{}, fmt.Errorf("ss -tmnH %q: %w", f.String(), err)
	}
	return parseSkmem(out)
}

// parseSkmem sums every "skmem:(r…,rb…,t…,tb…,f…,w…,…)" of ss output.
func parseSkmem(b []byte) (Skmem, error) {
	var s Skmem
	for len(b) > 0 {
		i := bytes.Index(b, []byte("skmem:("))
		if i < 0 {
			break
		}
		b = b[i+len("skmem:("):]
		j := bytes.IndexByte(b, ')')
		if j < 0 {
			return s, errors.New("ss: unterminated skmem")
		}
		for kv := range bytes.SplitSeq(b[:j], []byte(",")) {
			k := 0
			for k < len(kv) && kv[k] >= 'a' && kv[k] <= 'z' {
				k++
			}
			n, err := strconv.ParseInt(string(kv[k:]), 10, 64)
			if err != nil {
				return s, fmt.Errorf("ss: bad skmem field %q", kv)
			}
			switch string(kv[:k]) {
			case "r":
				s.Rmem += n
			case "rb":
				s.RcvBuf += n
			case "t":
				s.Wmem += n
			case "tb":
				s.SndBuf += n
			case "f":
				s.Fwd += n
			case "w":
				s.Queued += n
			}
		}
		s.Sockets++
		b = b[j:]
	}
	return s, nil
}

// CountFDs is the number of open file descriptors of pid (/proc/PID/fd).
func CountFDs(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	for range 1 << 10 { // 1<<10 batches of 1<<10: far beyond any fd limit here
		names, err := f.Readdirnames(1 << 10)
		n += len(names)
		if err != nil || len(names) == 0 {
			break
		}
	}
	return n, nil
}

// procAlive reports whether pid exists and is not a zombie.
func procAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}
