package watch

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Event is one new op of a watched DID, described.
type Event struct {
	Seq int64
	DID string
	// JSON is the Change, rendered: the body of a webhook and the data of
	// a server-sent event.
	JSON []byte
}

// What a Change lists in Changed.
const (
	ChangedCreated      = "created"      // the DID's genesis op
	ChangedRotationKeys = "rotationKeys" // the rotation keys (or their order)
	ChangedSigningKey   = "signingKey"   // verificationMethods.atproto
	ChangedHandle       = "handle"       // alsoKnownAs
	ChangedPDS          = "pds"          // services.atproto_pds's endpoint
	ChangedOther        = "other"        // another verification method or service
	ChangedTombstone    = "tombstone"    // the DID was deactivated
	ChangedNullified    = "nullified"    // a recovery: earlier ops were nullified
)

// Change is the JSON of an Event.
type Change struct {
	Seq int64  `json:"seq"`
	DID string `json:"did"`
	// Op is the op as a seq-mode /export line.
	Op json.RawMessage `json:"op"`
	// Changed names what differs between Before and After (see the
	// Changed* constants), in that order; empty for an op that repeats
	// the state it builds on.
	Changed []string `json:"changed"`
	// Before is the state the op builds on (its prev's); null for a
	// genesis op. After is the state it makes; null for a tombstone.
	Before *State `json:"before"`
	After  *State `json:"after"`
	// Nullified lists the ops the op nullified, oldest first (a recovery);
	// empty otherwise.
	Nullified []OpRef `json:"nullified"`
}

// State is the part of a DID's state a Change compares.
type State struct {
	RotationKeys []string `json:"rotationKeys"`
	// SigningKey is verificationMethods.atproto ("" when absent).
	SigningKey string `json:"signingKey"`
	// AlsoKnownAs holds the handles, as at:// URIs.
	AlsoKnownAs []string `json:"alsoKnownAs"`
	// PDS is services.atproto_pds's endpoint ("" when absent).
	PDS string `json:"pds"`

	data validate.Data
}

// OpRef names an op of the log.
type OpRef struct {
	Seq int64  `json:"seq"`
	CID string `json:"cid"`
}

// Describe returns the Event of the op at seq, given ops, every op of its
// DID up to it at least, in seq order (as Store.Ops returns them). It
// replays the chain by prev links, so a recovery's nullified ops are those
// that followed its prev in the chain just before it, whatever was
// nullified later.
func Describe(ops []oplog.Entry, seq int64) (Event, error) {
	evs, err := describe(ops, seq-1, seq)
	if err != nil {
		return Event{}, err
	}
	if len(evs) == 0 {
		return Event{}, fmt.Errorf("op %d: %w", seq, oplog.ErrNotFound)
	}
	return evs[0], nil
}

// describe returns the Events of the ops of ops (one DID's, in seq order,
// from its genesis) with after < seq <= upTo, in one pass.
func describe(ops []oplog.Entry, after, upTo int64) ([]Event, error) {
	type link struct {
		e  *oplog.Entry
		op *validate.Op
	}
	var (
		chain []link
		out   []Event
	)
	for i := range ops {
		e := &ops[i]
		if e.Seq > upTo {
			break
		}
		op, err := e.ParsedOp()
		if err != nil {
			return nil, err
		}
		var base int // chain[:base] is kept
		if prev := op.Prev(); prev != "" {
			base = slices.IndexFunc(chain, func(l link) bool { return l.op.CID() == prev }) + 1
			if base == 0 {
				return nil, fmt.Errorf("op %d (%s): prev %s is not in the DID's chain", e.Seq, e.CID, prev)
			}
		}
		if e.Seq > after {
			c := Change{Seq: e.Seq, DID: e.DID, Op: validate.AppendSequencedJSON(nil, e.DID, op, e.CreatedAt, e.Seq), Nullified: []OpRef{}}
			if base > 0 {
				c.Before = stateOf(chain[base-1].op)
			}
			c.After = stateOf(op)
			for _, l := range chain[base:] {
				c.Nullified = append(c.Nullified, OpRef{Seq: l.e.Seq, CID: l.op.CID()})
			}
			c.Changed = changed(c.Before, c.After, len(c.Nullified) > 0)
			b, err := json.Marshal(&c)
			if err != nil {
				return nil, err
			}
			out = append(out, Event{Seq: e.Seq, DID: e.DID, JSON: b})
		}
		chain = append(chain[:base], link{e, op})
	}
	return out, nil
}

// stateOf returns the state op makes, nil for a tombstone.
func stateOf(op *validate.Op) *State {
	d, ok := op.Data()
	if !ok {
		return nil
	}
	s := &State{RotationKeys: slices.Clone(d.RotationKeys), AlsoKnownAs: slices.Clone(d.AlsoKnownAs), data: d}
	if s.RotationKeys == nil {
		s.RotationKeys = []string{}
	}
	if s.AlsoKnownAs == nil {
		s.AlsoKnownAs = []string{}
	}
	for _, vm := range d.VerificationMethods {
		if vm.ID == "atproto" {
			s.SigningKey = vm.Key
		}
	}
	for _, sv := range d.Services {
		if sv.ID == "atproto_pds" {
			s.PDS = sv.Endpoint
		}
	}
	return s
}

func changed(before, after *State, nullified bool) []string {
	var out []string
	switch {
	case before == nil && after != nil:
		out = append(out, ChangedCreated)
	case after == nil:
		out = append(out, ChangedTombstone)
	default:
		if !slices.Equal(before.RotationKeys, after.RotationKeys) {
			out = append(out, ChangedRotationKeys)
		}
		if before.SigningKey != after.SigningKey {
			out = append(out, ChangedSigningKey)
		}
		if !slices.Equal(before.AlsoKnownAs, after.AlsoKnownAs) {
			out = append(out, ChangedHandle)
		}
		if before.PDS != after.PDS {
			out = append(out, ChangedPDS)
		}
		if !onlyAtproto(before, after) || !onlyPDS(before, after) {
			out = append(out, ChangedOther)
		}
	}
	if nullified {
		out = append(out, ChangedNullified)
	}
	if out == nil {
		out = []string{}
	}
	return out
}

// onlyAtproto: the verification methods differ in the atproto one only,
// if at all.
func onlyAtproto(a, b *State) bool {
	strip := func(vms []validate.VerificationMethod) []validate.VerificationMethod {
		return slices.DeleteFunc(slices.Clone(vms), func(v validate.VerificationMethod) bool { return v.ID == "atproto" })
	}
	return slices.Equal(strip(a.data.VerificationMethods), strip(b.data.VerificationMethods))
}

// onlyPDS: the services differ in atproto_pds only, if at all.
func onlyPDS(a, b *State) bool {
	strip := func(ss []validate.Service) []validate.Service {
		return slices.DeleteFunc(slices.Clone(ss), func(s validate.Service) bool { return s.ID == "atproto_pds" })
	}
	return slices.Equal(strip(a.data.Services), strip(b.data.Services))
}
