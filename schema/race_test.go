//go:build race

package schema

// raceEnabled: under the race detector sync.Pool drops items at random, so
// json.Valid (which pools its scanner) allocates; the non-race run asserts.
const raceEnabled = true
