package web

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// A DID's audit history, as the DID page shows it: every op with what it
// changed, who signed it, and the forks (which op nullified which).

// opView is one op of a DID's history.
type opView struct {
	// N is the op's position in the DID's log (1, 2, 3 …).
	N         int
	Seq       int64
	CID       string
	Type      validate.Type
	CreatedAt time.Time
	Nullified bool
	// Prev is the N of the op's prev (0 for a genesis op, or when the prev
	// is not in the log, which the chain rules rule out).
	Prev int
	// Signer is the rotation key that verified the op and SignerIndex its
	// index among the keys allowed to sign it (the prev's rotation keys;
	// the op's own for a genesis op). SignerIndex is -1 when no key
	// verifies (a log the rules would not have accepted).
	Signer      string
	SignerIndex int
	// Changes is what the op changed against its prev.
	Changes []change
	// NullifiedBy is the N of the recovery op that nullified this one (0:
	// none).
	NullifiedBy int
	// Recovery is set on an op that nullified others.
	Recovery *recovery
	// Depth is how many recoveries undid this op, directly or by undoing
	// the op that undid it: 0 for the ops of the current chain. It is the
	// op's lane in the graph.
	Depth int
}

// recovery is a fork: an op that nullified the ops after its prev.
type recovery struct {
	// ForkAt is the N of the prev the recovery forked from; Nullified the
	// Ns of the ops it nullified, in log order.
	ForkAt    int
	Nullified []int
	// WindowStart is the createdAt of the first op nullified: the 72-hour
	// window runs from it to WindowEnd. Elapsed is how far into the
	// window the recovery came.
	WindowStart, WindowEnd time.Time
	Elapsed                time.Duration
}

// Tombstone reports whether the op is a tombstone.
func (o *opView) Tombstone() bool { return o.Type == validate.TypeTombstone }

// TypeName is the op's type as it appears in the JSON.
func (o *opView) TypeName() string {
	switch o.Type {
	case validate.TypeOperation:
		return "plc_operation"
	case validate.TypeTombstone:
		return "plc_tombstone"
	case validate.TypeCreate:
		return "create"
	}
	return "unknown"
}

// change is one difference between an op's identity data and its prev's.
type change struct {
	// What names the field: "handle", "PDS", "service x", "verification
	// key atproto", "rotation key 1", or a note ("deactivated …").
	What string
	// Old and New are the values (empty: absent).
	Old, New string
	// Set marks the values of a genesis op, which has no prev.
	Set bool
}

// Summary renders the change on one line.
func (c change) Summary() string {
	switch {
	case c.Old == "" && c.New == "":
		return c.What
	case c.Set:
		return c.What + ": " + c.New
	case c.Old == "":
		return c.What + " added: " + c.New
	case c.New == "":
		return c.What + " removed: " + c.Old
	}
	return c.What + ": " + c.Old + " → " + c.New
}

// history builds the views of a DID's ops (all of them, in log order, with
// their Nullified flags as the store reports them). signers maps the seqs
// of the ops whose signer index the store recorded (the current chain's)
// to it; the others' are found by checking the signature against the
// allowed keys in order, as the chain rules do.
func history(entries []oplog.Entry, signers map[int64]int) ([]opView, error) {
	ops := make([]*validate.Op, len(entries))
	views := make([]opView, len(entries))
	byCID := make(map[string]int, len(entries))
	for i := range entries {
		e := &entries[i]
		op, err := e.ParsedOp()
		if err != nil {
			return nil, err
		}
		ops[i] = op
		views[i] = opView{
			N: i + 1, Seq: e.Seq, CID: e.CID, Type: op.Type(), CreatedAt: e.CreatedAt.UTC(),
			Nullified: e.Nullified, SignerIndex: -1,
		}
		if _, dup := byCID[e.CID]; !dup {
			byCID[e.CID] = i
		}
	}

	// Forks: replay the chain by prev links (the signatures were checked
	// when the ops were accepted): an op whose prev is not the head of the
	// chain as it stood nullifies everything after its prev.
	var chain []int // indexes into views of the ops not nullified (so far)
	for i := range views {
		v := &views[i]
		prev := ops[i].Prev()
		if prev == "" {
			chain = append(chain[:0], i)
			continue
		}
		p, ok := byCID[prev]
		if !ok || p >= i {
			chain = append(chain, i)
			continue
		}
		v.Prev = p + 1
		at := slices.Index(chain, p)
		if at < 0 || at == len(chain)-1 {
			chain = append(chain, i)
			continue
		}
		undone := chain[at+1:]
		r := &recovery{ForkAt: p + 1, WindowStart: views[undone[0]].CreatedAt}
		r.WindowEnd = r.WindowStart.Add(validate.RecoveryWindow)
		r.Elapsed = v.CreatedAt.Sub(r.WindowStart)
		for _, u := range undone {
			r.Nullified = append(r.Nullified, u+1)
			views[u].NullifiedBy = i + 1
		}
		v.Recovery = r
		chain = append(chain[:at+1], i)
	}
	// Depth: a recovery comes after the ops it undoes, so one pass from
	// the end finds every op's undoer's depth first.
	for i := len(views) - 1; i >= 0; i-- {
		v := &views[i]
		switch {
		case v.NullifiedBy > 0:
			v.Depth = views[v.NullifiedBy-1].Depth + 1
		case v.Nullified:
			v.Depth = 1 // nullified, by an op this replay did not find
		}
	}

	// Signers and changes, against the prev's data.
	for i := range views {
		v := &views[i]
		var prevOp *validate.Op
		if v.Prev > 0 {
			prevOp = ops[v.Prev-1]
		}
		var allowed []string
		if prevOp != nil {
			d, _ := prevOp.Data()
			allowed = d.RotationKeys
		} else if d, ok := ops[i].Data(); ok {
			allowed = d.RotationKeys
		}
		if idx, ok := signers[v.Seq]; ok && idx >= 0 && idx < len(allowed) {
			v.SignerIndex, v.Signer = idx, allowed[idx]
		} else {
			for j, k := range allowed {
				if validate.VerifySignature(ops[i], k) {
					v.SignerIndex, v.Signer = j, k
					break
				}
			}
		}
		v.Changes = changes(prevOp, ops[i])
		for j := range v.Changes {
			c := &v.Changes[j]
			c.What, c.Old, c.New = reveal(c.What), reveal(c.Old), reveal(c.New)
		}
	}
	return views, nil
}

// changes lists what op changed against prev (nil for a genesis op: all
// of its data is new).
func changes(prev, op *validate.Op) []change {
	if op.Type() == validate.TypeTombstone {
		return []change{{What: "deactivated (tombstone)"}}
	}
	now, _ := op.Data()
	var was validate.Data
	if prev != nil {
		was, _ = prev.Data()
	}
	var out []change
	out = append(out, listChanges("handle", was.AlsoKnownAs, now.AlsoKnownAs)...)
	out = append(out, serviceChanges(was.Services, now.Services)...)
	out = append(out, methodChanges(was.VerificationMethods, now.VerificationMethods)...)
	if prev == nil {
		out = append(out, change{What: "rotation keys", New: keyList(now.RotationKeys)})
		for i := range out {
			out[i].Set = true
		}
		return out
	}
	return append(out, rotationChanges(was.RotationKeys, now.RotationKeys)...)
}

// rotationChanges lists the rotation keys removed and added (with their
// new priority), or says the same keys were reordered.
func rotationChanges(was, now []string) []change {
	var out []change
	for i, k := range was {
		if !slices.Contains(now, k) {
			out = append(out, change{What: fmt.Sprintf("rotation key %d", i), Old: k})
		}
	}
	for i, k := range now {
		if !slices.Contains(was, k) {
			out = append(out, change{What: fmt.Sprintf("rotation key %d", i), New: k})
		}
	}
	if len(out) == 0 && !slices.Equal(was, now) {
		out = append(out, change{What: "rotation keys reordered", Old: keyList(was), New: keyList(now)})
	}
	return out
}

// listChanges compares two lists of values: one replaced by one is a
// change, else each removal and addition.
func listChanges(what string, was, now []string) []change {
	var removed, added []string
	for _, s := range was {
		if !slices.Contains(now, s) {
			removed = append(removed, s)
		}
	}
	for _, s := range now {
		if !slices.Contains(was, s) {
			added = append(added, s)
		}
	}
	if len(removed) == 1 && len(added) == 1 {
		return []change{{What: what, Old: removed[0], New: added[0]}}
	}
	var out []change
	for _, s := range removed {
		out = append(out, change{What: what, Old: s})
	}
	for _, s := range added {
		out = append(out, change{What: what, New: s})
	}
	return out
}

func serviceName(id string) string {
	if id == "atproto_pds" {
		return "PDS"
	}
	return "service " + id
}

func serviceChanges(was, now []validate.Service) []change {
	var out []change
	find := func(svcs []validate.Service, id string) (validate.Service, bool) {
		for _, s := range svcs {
			if s.ID == id {
				return s, true
			}
		}
		return validate.Service{}, false
	}
	for _, s := range was {
		if _, ok := find(now, s.ID); !ok {
			out = append(out, change{What: serviceName(s.ID), Old: s.Endpoint})
		}
	}
	for _, s := range now {
		old, ok := find(was, s.ID)
		switch {
		case !ok:
			out = append(out, change{What: serviceName(s.ID), New: s.Endpoint})
		case old.Endpoint != s.Endpoint:
			out = append(out, change{What: serviceName(s.ID), Old: old.Endpoint, New: s.Endpoint})
		}
		if ok && old.Type != s.Type {
			out = append(out, change{What: serviceName(s.ID) + " type", Old: old.Type, New: s.Type})
		}
	}
	return out
}

func methodChanges(was, now []validate.VerificationMethod) []change {
	var out []change
	find := func(vms []validate.VerificationMethod, id string) (string, bool) {
		for _, m := range vms {
			if m.ID == id {
				return m.Key, true
			}
		}
		return "", false
	}
	for _, m := range was {
		if _, ok := find(now, m.ID); !ok {
			out = append(out, change{What: "verification key " + m.ID, Old: m.Key})
		}
	}
	for _, m := range now {
		old, ok := find(was, m.ID)
		if !ok || old != m.Key {
			out = append(out, change{What: "verification key " + m.ID, Old: old, New: m.Key})
		}
	}
	return out
}

// keyList renders rotation keys in priority order.
func keyList(keys []string) string {
	if len(keys) == 0 {
		return "(none)"
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d: %s", i, k)
	}
	return strings.Join(parts, ", ")
}
