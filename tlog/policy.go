package tlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// Witness policy limits: a policy is configuration, small by nature.
const (
	// MaxPolicyBytes bounds a policy file.
	MaxPolicyBytes = 64 << 10
	// MaxPolicyWitnesses bounds its witness lines, and MaxPolicyGroups
	// its group lines.
	MaxPolicyWitnesses = 64
	MaxPolicyGroups    = 64
)

// A Policy is a witness policy: which witnesses cosign a log's
// checkpoints and which sets of them are enough (the quorum). Its file
// format is the Sigsum policy format with signed-note verifier keys, as
// torchwood and tessera read it, one definition a line, '#' starting a
// comment:
//
//	log VKEY [URL]                   the log's verifier key (optional; when
//	                                 given, the log's key must be one of them)
//	witness NAME VKEY [URL]          a witness: its C2SP tlog-cosignature key
//	                                 (Ed25519 or ML-DSA-44) and the URL under
//	                                 which it serves add-checkpoint
//	group NAME all|any|K MEMBER...   met when all, any one, or K of its
//	                                 members (witnesses or groups) are
//	quorum NAME|none                 the witness or group a checkpoint needs
//	                                 (exactly one quorum line)
//
// A name is defined once, before any line that uses it; "none" is
// reserved. A witness may be in several groups.
type Policy struct {
	// Logs are the verifier keys of the log lines.
	Logs []string

	witnesses []*policyWitness
	names     map[string]*policyNode
	quorum    *policyNode // nil: none
}

type policyWitness struct {
	name     string
	vkey     string
	url      string
	verifier note.Verifier
}

// policyNode is a witness (witness >= 0) or a group of k of members.
type policyNode struct {
	witness int
	k       int
	members []*policyNode
}

// ReadPolicyFile reads and parses the policy file at path (at most
// MaxPolicyBytes).
func ReadPolicyFile(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPolicyBytes+1))
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("witness policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a witness policy (see Policy), strictly: an unknown
// keyword, a malformed or duplicate definition, a name used before its
// definition or a bad key is an error naming its line.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > MaxPolicyBytes {
		return nil, fmt.Errorf("more than %d bytes", MaxPolicyBytes)
	}
	p := &Policy{names: map[string]*policyNode{}}
	vkeys := map[string]string{} // vkey → name
	groups, quorumLine := 0, 0
	for i, line := range strings.Split(string(b), "\n") {
		n := i + 1
		fail := func(format string, args ...any) (*Policy, error) {
			return nil, fmt.Errorf("line %d: "+format, append([]any{n}, args...)...)
		}
		line, _, _ = strings.Cut(line, "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		define := func(name string) error {
			switch {
			case name == "none":
				return fmt.Errorf("line %d: the name none is reserved", n)
			case p.names[name] != nil:
				return fmt.Errorf("line %d: %q is already defined", n, name)
			}
			return nil
		}
		switch kw := fields[0]; kw {
		case "log":
			if len(fields) < 2 || len(fields) > 3 {
				return fail("want log VKEY [URL]")
			}
			if _, err := NewVerifier(fields[1]); err != nil {
				return fail("log: %v", err)
			}
			p.Logs = append(p.Logs, fields[1])
		case "witness":
			if len(fields) < 3 || len(fields) > 4 {
				return fail("want witness NAME VKEY [URL]")
			}
			name, vkey := fields[1], fields[2]
			if err := define(name); err != nil {
				return nil, err
			}
			if len(p.witnesses) == MaxPolicyWitnesses {
				return fail("more than %d witnesses", MaxPolicyWitnesses)
			}
			v, err := NewCosignatureVerifier(vkey)
			if err != nil {
				return fail("witness %s: %v", name, err)
			}
			if other, dup := vkeys[vkey]; dup {
				return fail("witness %s has the key of witness %s", name, other)
			}
			w := &policyWitness{name: name, vkey: vkey, verifier: v}
			if len(fields) == 4 {
				w.url = fields[3]
				if err := (&Witness{URL: w.url, VKey: vkey}).init(); err != nil {
					return fail("witness %s: %v", name, err)
				}
			}
			vkeys[vkey] = name
			p.names[name] = &policyNode{witness: len(p.witnesses)}
			p.witnesses = append(p.witnesses, w)
		case "group":
			if len(fields) < 4 {
				return fail("want group NAME all|any|K MEMBER...")
			}
			name, ks, members := fields[1], fields[2], fields[3:]
			if err := define(name); err != nil {
				return nil, err
			}
			if groups == MaxPolicyGroups {
				return fail("more than %d groups", MaxPolicyGroups)
			}
			g := &policyNode{witness: -1}
			for j, m := range members {
				node := p.names[m]
				if node == nil {
					return fail("group %s: %q is not defined on a line above", name, m)
				}
				if slices.Contains(members[:j], m) {
					return fail("group %s: %q is listed twice", name, m)
				}
				g.members = append(g.members, node)
			}
			switch ks {
			case "all":
				g.k = len(members)
			case "any":
				g.k = 1
			default:
				k, err := strconv.Atoi(ks)
				if err != nil || k < 1 || k > len(members) || strconv.Itoa(k) != ks {
					return fail("group %s: threshold %q: want all, any or a number from 1 to %d (its members)", name, ks, len(members))
				}
				g.k = k
			}
			groups++
			p.names[name] = g
		case "quorum":
			if len(fields) != 2 {
				return fail("want quorum NAME (a witness or a group) or quorum none")
			}
			if quorumLine > 0 {
				return fail("a second quorum line (the first is line %d)", quorumLine)
			}
			quorumLine = n
			if fields[1] != "none" {
				if p.quorum = p.names[fields[1]]; p.quorum == nil {
					return fail("quorum %q is not defined on a line above", fields[1])
				}
			}
		default:
			return fail("unknown keyword %q: want log, witness, group or quorum", kw)
		}
	}
	if quorumLine == 0 {
		return nil, errors.New("no quorum line (quorum NAME, or quorum none)")
	}
	return p, nil
}

// Witnesses returns the policy's witnesses that have a URL, in the order
// of the file: those the log asks to cosign its checkpoints
// (Options.Witnesses). Each call returns new Witnesses.
func (p *Policy) Witnesses() []*Witness {
	var ws []*Witness
	for _, w := range p.witnesses {
		if w.url != "" {
			ws = append(ws, &Witness{URL: w.url, VKey: w.vkey})
		}
	}
	return ws
}

// Satisfied reports whether the quorum is met when the witnesses with
// the verifier keys cosigned have cosigned a checkpoint (their
// cosignatures verified: see Cosignatures). Keys not in the policy count
// for nothing. A policy with quorum none is always satisfied.
func (p *Policy) Satisfied(cosigned []string) bool {
	if p.quorum == nil {
		return true
	}
	have := make([]bool, len(p.witnesses))
	for _, vkey := range cosigned {
		for i, w := range p.witnesses {
			if w.vkey == strings.TrimSpace(vkey) {
				have[i] = true
			}
		}
	}
	return p.quorum.met(have)
}

func (n *policyNode) met(have []bool) bool {
	if n.witness >= 0 {
		return have[n.witness]
	}
	c := 0
	for _, m := range n.members {
		if m.met(have) {
			c++
		}
	}
	return c >= n.k
}

// Quorum returns the fewest cosignatures that can meet the quorum (0 for
// quorum none): for a quorum of K of witnesses, K. It is exact when no
// witness is in two groups of the quorum; Satisfied is the rule.
func (p *Policy) Quorum() int {
	if p.quorum == nil {
		return 0
	}
	return p.quorum.least()
}

func (n *policyNode) least() int {
	if n.witness >= 0 {
		return 1
	}
	ls := make([]int, len(n.members))
	for i, m := range n.members {
		ls[i] = m.least()
	}
	slices.Sort(ls)
	sum := 0
	for _, l := range ls[:n.k] {
		sum += l
	}
	return sum
}

// CheckReachable refuses a policy a log cannot meet: one whose quorum
// the witnesses with a URL (those it can ask) cannot meet even if all of
// them cosign, and one with witnesses but quorum none (the log would ask
// them for nothing it needs: name the quorum).
func (p *Policy) CheckReachable() error {
	var urls []string
	for _, w := range p.witnesses {
		if w.url != "" {
			urls = append(urls, w.vkey)
		}
	}
	switch {
	case p.quorum == nil && len(urls) > 0:
		return errors.New("the quorum is none but witnesses have URLs: name the quorum the checkpoints need")
	case !p.Satisfied(urls):
		var missing []string
		for _, w := range p.witnesses {
			if w.url == "" {
				missing = append(missing, w.name)
			}
		}
		return fmt.Errorf("the quorum can never be met by the witnesses the log can ask (those without a URL: %s)", strings.Join(missing, ", "))
	}
	return nil
}

// CheckLog refuses a policy whose log lines do not name the log's key
// vkey (a policy without log lines names none and is accepted).
func (p *Policy) CheckLog(vkey string) error {
	if len(p.Logs) == 0 || slices.Contains(p.Logs, strings.TrimSpace(vkey)) {
		return nil
	}
	return fmt.Errorf("the policy's log lines name other keys than the log's %s", vkey)
}

// Name returns the policy's name of the witness with verifier key vkey
// ("" when none).
func (p *Policy) Name(vkey string) string {
	for _, w := range p.witnesses {
		if w.vkey == strings.TrimSpace(vkey) {
			return w.name
		}
	}
	return ""
}

// Cosignatures is what a checkpoint's signature lines say under a
// policy.
type Cosignatures struct {
	// Verified are the verifier keys of the policy's witnesses whose
	// cosignature verifies.
	Verified []string
	// Invalid are those of the policy's witnesses with a cosignature line
	// (their name and key ID) that does not verify: a forged or corrupted
	// cosignature.
	Invalid []string
}

// Cosignatures checks the cosignatures of the signed checkpoint msg one
// by one against the policy's witnesses' keys; lines of other keys are
// ignored (the log's own, unknown witnesses').
func (p *Policy) Cosignatures(msg []byte) Cosignatures {
	var c Cosignatures
	text, lines := splitNote(msg)
	for _, l := range lines {
		for _, w := range p.witnesses {
			if w.verifier.Name() != l.name || w.verifier.KeyHash() != l.hash {
				continue
			}
			one := make([]byte, 0, len(text)+1+len(l.line)+1)
			one = append(append(append(one, text...), '\n'), l.line...)
			one = append(one, '\n')
			if _, err := note.Open(one, note.VerifierList(w.verifier)); err != nil {
				if !slices.Contains(c.Invalid, w.vkey) {
					c.Invalid = append(c.Invalid, w.vkey)
				}
			} else if !slices.Contains(c.Verified, w.vkey) {
				c.Verified = append(c.Verified, w.vkey)
			}
		}
	}
	return c
}
