package plc

import (
	"bytes"
	"testing"
	"time"
	"unicode/utf8"
)

func leafSeeds() []Leaf {
	return []Leaf{
		{Seq: 1, DID: "did:plc:ewvi7nxzyoun6zhxrhs64oiz", CID: "bafyreigp6shzy6dlcxuowwoxz7u5nemdrkad2my5zwzpwilcnhih7bw6zm",
			CreatedAt: time.Date(2023, 3, 1, 12, 30, 0, 123e6, time.UTC), Op: []byte{0xa1, 0x63, 's', 'i', 'g', 0x60}},
		{Seq: 1 << 40, DID: "did:plc:x", CID: "c", CreatedAt: time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC), Op: bytes.Repeat([]byte{7}, 300)},
		{Seq: 23, CreatedAt: time.Unix(0, 0).UTC()},
	}
}

func FuzzLeaf(f *testing.F) {
	for _, l := range leafSeeds() {
		f.Add(AppendLeaf(nil, &l), l.Seq, l.DID, l.CID, l.CreatedAt.UnixMilli(), l.Op)
	}
	f.Add([]byte{0xa5}, int64(0), "", "", int64(-1), []byte(nil))
	f.Fuzz(func(t *testing.T, b []byte, seq int64, did, cid string, ms int64, op []byte) {
		// Whatever decodes encodes to the same bytes.
		if l, err := ParseLeaf(b); err == nil {
			if got := AppendLeaf(nil, &l); !bytes.Equal(got, b) {
				t.Fatalf("ParseLeaf(%x) = %+v, which encodes to %x", b, l, got)
			}
		}
		// Whatever encodes decodes to itself.
		at := time.UnixMilli(ms).UTC()
		if seq <= 0 || !utf8.ValidString(did) || !utf8.ValidString(cid) || at.Year() < 0 || at.Year() > 9999 {
			return
		}
		x := Leaf{Seq: seq, DID: did, CID: cid, CreatedAt: at, Op: op}
		enc := AppendLeaf(nil, &x)
		got, err := ParseLeaf(enc)
		if err != nil {
			t.Fatalf("ParseLeaf(AppendLeaf(%+v)): %v", x, err)
		}
		if got.Seq != x.Seq || got.DID != x.DID || got.CID != x.CID || !got.CreatedAt.Equal(x.CreatedAt) ||
			got.CreatedAt.Location() != time.UTC || !bytes.Equal(got.Op, x.Op) {
			t.Fatalf("ParseLeaf(AppendLeaf(%+v)) = %+v", x, got)
		}
	})
}

func TestLeafRejectsNonCanonical(t *testing.T) {
	l := leafSeeds()[0]
	good := AppendLeaf(nil, &l)
	if _, err := ParseLeaf(good); err != nil {
		t.Fatal(err)
	}
	long := append([]byte{0xa5, 0x78, 2}, good[2:]...) // "op" with a one-byte length head
	for name, b := range map[string][]byte{
		"Truncated":    good[:len(good)-1],
		"Trailing":     append(bytes.Clone(good), 0),
		"LongHead":     long,
		"NotAMap":      append([]byte{0xa4}, good[1:]...),
		"SeqZero":      AppendLeaf(nil, &Leaf{Seq: 0, CreatedAt: l.CreatedAt}),
		"MicroSeconds": bytes.Replace(good, []byte("\x78\x182023-03-01T12:30:00.123Z"), []byte("\x78\x1a2023-03-01T12:30:00.12300Z"), 1),
	} {
		if _, err := ParseLeaf(b); err == nil {
			t.Errorf("%s: ParseLeaf accepted %x", name, b)
		}
	}
}

func TestBundleRoundTrip(t *testing.T) {
	var b []byte
	leaves := [][]byte{{}, []byte("a"), bytes.Repeat([]byte{1}, 0xffff)}
	for _, l := range leaves {
		var err error
		if b, err = AppendBundleEntry(b, l); err != nil {
			t.Fatal(err)
		}
	}
	got, err := SplitBundle(b, len(leaves))
	if err != nil || len(got) != len(leaves) {
		t.Fatalf("SplitBundle: %d entries, %v", len(got), err)
	}
	for i := range leaves {
		if !bytes.Equal(got[i], leaves[i]) {
			t.Errorf("entry %d: %x, want %x", i, got[i], leaves[i])
		}
	}
	if _, err := AppendBundleEntry(nil, make([]byte, 0x10000)); err == nil {
		t.Error("a leaf over 64 KiB taken into a bundle")
	}
	for _, bad := range [][]byte{b[:1], b[:len(b)-1], append(bytes.Clone(b), 0)} {
		if _, err := SplitBundle(bad, len(leaves)); err == nil {
			t.Errorf("SplitBundle(%d bytes) accepted", len(bad))
		}
	}
}
