package server

// CheckConfig reports what New would refuse in cfg before it opens
// anything (upsink check-config): addresses, limits, HTTPS without a
// certificate. It binds no port and touches no database.
func CheckConfig(cfg Config) error { return cfg.setDefaults() }
