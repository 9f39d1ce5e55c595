package validate

// ParseDIDKeyUncached parses like ParseDIDKey without the cache (for
// benchmarks).
var ParseDIDKeyUncached = parseDIDKey
