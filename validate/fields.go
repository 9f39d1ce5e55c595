package validate

// operationFromValue maps a generic value onto an Operation, strictly: the
// top level must be an object whose keys are exactly those of its type.
func operationFromValue(v value) (Operation, error) {
	var o Operation
	if v.kind != kindObject {
		return o, malformed("expected a JSON object, got %s", v.kind)
	}
	var typ *value
	for i := range v.obj {
		if v.obj[i].key == "type" {
			typ = &v.obj[i].val
		}
	}
	if typ == nil {
		return o, malformed("missing field \"type\"")
	}
	if typ.kind != kindString {
		return o, malformed("field \"type\" must be a string")
	}
	t, ok := parseType(typ.str)
	if !ok {
		return o, malformed("unknown operation type %q", typ.str)
	}
	o.Type = t

	var allowed []string
	switch t {
	case TypeOperation:
		allowed = []string{"type", "sig", "prev", "rotationKeys", "verificationMethods", "alsoKnownAs", "services"}
	case TypeTombstone:
		allowed = []string{"type", "sig", "prev"}
	case TypeCreate:
		allowed = []string{"type", "sig", "prev", "signingKey", "recoveryKey", "handle", "service"}
	}
	seen := make([]bool, len(allowed))
	for _, m := range v.obj {
		idx := -1
		for i, k := range allowed {
			if k == m.key {
				idx = i
				break
			}
		}
		if idx < 0 {
			return o, malformed("unknown field %q in %s", m.key, t)
		}
		seen[idx] = true
		var err error
		switch m.key {
		case "type":
		case "sig":
			o.Sig, err = asString(m)
		case "prev":
			switch m.val.kind {
			case kindNull:
			case kindString:
				if m.val.str == "" {
					return o, malformed("invalid prev CID: \"\"")
				}
				o.Prev = m.val.str
			default:
				return o, malformed("field \"prev\" must be a string or null, got %s", m.val.kind)
			}
		case "rotationKeys":
			o.RotationKeys, err = asStrings(m)
		case "alsoKnownAs":
			o.AlsoKnownAs, err = asStrings(m)
		case "verificationMethods":
			if m.val.kind != kindObject {
				return o, malformed("field \"verificationMethods\" must be an object, got %s", m.val.kind)
			}
			o.VerificationMethods = make([]VerificationMethod, 0, len(m.val.obj))
			for _, e := range m.val.obj {
				if e.val.kind != kindString {
					return o, malformed("verificationMethods[%q] must be a string, got %s", e.key, e.val.kind)
				}
				o.VerificationMethods = append(o.VerificationMethods, VerificationMethod{ID: e.key, Key: e.val.str})
			}
		case "services":
			if m.val.kind != kindObject {
				return o, malformed("field \"services\" must be an object, got %s", m.val.kind)
			}
			o.Services = make([]Service, 0, len(m.val.obj))
			for _, e := range m.val.obj {
				s, err := asService(e)
				if err != nil {
					return o, err
				}
				o.Services = append(o.Services, s)
			}
		case "signingKey":
			o.SigningKey, err = asString(m)
		case "recoveryKey":
			o.RecoveryKey, err = asString(m)
		case "handle":
			o.Handle, err = asString(m)
		case "service":
			o.Service, err = asString(m)
		}
		if err != nil {
			return o, err
		}
	}
	for i, ok := range seen {
		if !ok {
			return o, malformed("missing field %q in %s", allowed[i], t)
		}
	}
	return o, nil
}

func asString(m member) (string, error) {
	if m.val.kind != kindString {
		return "", malformed("field %q must be a string, got %s", m.key, m.val.kind)
	}
	return m.val.str, nil
}

func asStrings(m member) ([]string, error) {
	if m.val.kind != kindArray {
		return nil, malformed("field %q must be an array of strings, got %s", m.key, m.val.kind)
	}
	out := make([]string, len(m.val.arr))
	for i, e := range m.val.arr {
		if e.kind != kindString {
			return nil, malformed("%s[%d] must be a string, got %s", m.key, i, e.kind)
		}
		out[i] = e.str
	}
	return out, nil
}

func asService(e member) (Service, error) {
	s := Service{ID: e.key}
	if e.val.kind != kindObject {
		return s, malformed("services[%q] must be an object, got %s", e.key, e.val.kind)
	}
	var haveType, haveEndpoint bool
	for _, f := range e.val.obj {
		if f.val.kind != kindString {
			return s, malformed("services[%q].%s must be a string, got %s", e.key, f.key, f.val.kind)
		}
		switch f.key {
		case "type":
			s.Type, haveType = f.val.str, true
		case "endpoint":
			s.Endpoint, haveEndpoint = f.val.str, true
		default:
			return s, malformed("unknown field %q in services[%q]", f.key, e.key)
		}
	}
	if !haveType || !haveEndpoint {
		return s, malformed("services[%q] needs both type and endpoint", e.key)
	}
	return s, nil
}
