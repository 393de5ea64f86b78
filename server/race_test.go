//go:build race

package server

// raceEnabled: the race detector allocates on its own; allocation counts are
// asserted by the non-race run that `make test` also does.
const raceEnabled = true
