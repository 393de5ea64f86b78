// Command upsink-bench measures upsink (and its net/http baseline): upload
// throughput and latency under load, memory per idle connection, and process
// RSS. See bench/run.sh and BENCHMARKS.md.
package main

import (
	"os"

	"upsink/bench"
)

func main() {
	bench.Prog = os.Args[0]
	os.Exit(bench.Main(os.Args[1:], os.Stdout, os.Stderr))
}
