package oplog

import "fmt"

// checkWrites enforces the density of seq inside Append, whatever decide
// returned: a bug there must fail the transaction, not leave a gap.
func checkWrites(last int64, writes []Write) error {
	for i, w := range writes {
		if want := last + 1 + int64(i); w.Entry.Seq != want {
			return fmt.Errorf("oplog: write %d has seq %d, want %d", i, w.Entry.Seq, want)
		}
		if w.Record.DID != w.Entry.DID {
			return fmt.Errorf("oplog: write %d: record of %s for an op of %s", i, w.Record.DID, w.Entry.DID)
		}
	}
	return nil
}

// plannedWrite is a Write with what to do for it: insert its op always;
// write its DID record only if no later write of the batch replaces it.
type plannedWrite struct {
	Write
	op, record bool
}

func lastRecordOnly(writes []Write) []plannedWrite {
	last := make(map[string]int, len(writes))
	for i, w := range writes {
		last[w.Entry.DID] = i
	}
	out := make([]plannedWrite, len(writes))
	for i, w := range writes {
		out[i] = plannedWrite{Write: w, op: true, record: last[w.Entry.DID] == i}
	}
	return out
}
