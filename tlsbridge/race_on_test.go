//go:build race

package tlsbridge

const raceEnabled = true
