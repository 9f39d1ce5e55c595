package tlog_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc/tlog"
)

type policyKeys struct {
	vkeys     map[string]string
	cosigners map[string]*tlog.Cosigner
}

// newPolicyKeys makes a cosigner of each kind per name (ML-DSA-44 for
// names starting with "pq").
func newPolicyKeys(t *testing.T, names ...string) policyKeys {
	t.Helper()
	k := policyKeys{vkeys: map[string]string{}, cosigners: map[string]*tlog.Cosigner{}}
	for _, n := range names {
		typ := tlog.CosignatureEd25519
		if strings.HasPrefix(n, "pq") {
			typ = tlog.CosignatureMLDSA44
		}
		skey, vkey, err := tlog.GenerateCosignerKey(typ, n+".example/witness")
		if err != nil {
			t.Fatal(err)
		}
		c, err := tlog.NewCosigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		k.vkeys[n], k.cosigners[n] = vkey, c
	}
	return k
}

func TestPolicyQuorum(t *testing.T) {
	k := newPolicyKeys(t, "a", "b", "c", "pq1", "pq2")
	key := newKey(t, "plc.test/tlog")
	src := fmt.Sprintf(`# the log
log %s
witness a   %s https://a.example/w
witness b   %s https://b.example/w   # a comment
witness c   %s
witness pq1 %s https://pq1.example/w
witness pq2 %s https://pq2.example/w

group classic 2 a b c
group pq any pq1 pq2
group both all classic pq
quorum both
`, key.VKey, k.vkeys["a"], k.vkeys["b"], k.vkeys["c"], k.vkeys["pq1"], k.vkeys["pq2"])
	p, err := tlog.ParsePolicy([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, w := range p.Witnesses() {
		urls = append(urls, w.URL)
	}
	if want := []string{"https://a.example/w", "https://b.example/w", "https://pq1.example/w", "https://pq2.example/w"}; !slices.Equal(urls, want) {
		t.Fatalf("Witnesses() URLs = %v, want %v (c has none)", urls, want)
	}
	if p.Quorum() != 3 {
		t.Fatalf("Quorum() = %d, want 3", p.Quorum())
	}
	if err := p.CheckReachable(); err != nil {
		t.Fatalf("CheckReachable: %v", err)
	}
	if err := p.CheckLog(key.VKey); err != nil {
		t.Fatal(err)
	}
	if err := p.CheckLog(newKey(t, "plc.test/tlog").VKey); err == nil {
		t.Fatal("CheckLog accepted another log's key")
	}
	vk := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, k.vkeys[n])
		}
		return out
	}
	for _, tc := range []struct {
		cosigned []string
		want     bool
	}{
		{vk("a", "b", "pq1"), true},
		{vk("a", "c", "pq2"), true},
		{vk("a", "b", "c", "pq1", "pq2"), true},
		{vk("a", "b"), false},
		{vk("a", "pq1", "pq2"), false},
		{nil, false},
		{append(vk("a", "pq1"), newPolicyKeys(t, "x").vkeys["x"]), false}, // a stranger counts for nothing
	} {
		if got := p.Satisfied(tc.cosigned); got != tc.want {
			t.Errorf("Satisfied(%d keys) = %v, want %v", len(tc.cosigned), got, tc.want)
		}
	}
	if p.Name(k.vkeys["pq2"]) != "pq2" {
		t.Fatalf("Name = %q", p.Name(k.vkeys["pq2"]))
	}
}

// TestPolicyOfWitnessesWithoutURLsIsRefusedForALog: a quorum that the
// witnesses a log can ask can never meet.
func TestPolicyOfWitnessesWithoutURLsIsRefusedForALog(t *testing.T) {
	k := newPolicyKeys(t, "a", "b")
	p, err := tlog.ParsePolicy(fmt.Appendf(nil, "witness a %s https://a.example\nwitness b %s\ngroup g all a b\nquorum g\n", k.vkeys["a"], k.vkeys["b"]))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckReachable(); err == nil || !strings.Contains(err.Error(), "never be met") || !strings.Contains(err.Error(), "b") {
		t.Fatalf("CheckReachable = %v", err)
	}
	p, err = tlog.ParsePolicy(fmt.Appendf(nil, "witness a %s https://a.example\nquorum none\n", k.vkeys["a"]))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckReachable(); err == nil || !strings.Contains(err.Error(), "none") {
		t.Fatalf("CheckReachable of quorum none with witnesses = %v", err)
	}
	if !p.Satisfied(nil) || p.Quorum() != 0 {
		t.Fatal("quorum none is not always satisfied")
	}
}

func TestParsePolicyErrors(t *testing.T) {
	k := newPolicyKeys(t, "a", "b")
	a, b := k.vkeys["a"], k.vkeys["b"]
	_, plain, err := note.GenerateKey(nil, "w.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ src, want string }{
		{"", "no quorum line"},
		{"# nothing\n", "no quorum line"},
		{"witness a " + a + "\n", "no quorum line"},
		{"quorum none\nquorum none\n", "line 2: a second quorum line (the first is line 1)"},
		{"quorum w\n", `line 1: quorum "w" is not defined on a line above`},
		{"quorum\n", "line 1: want quorum NAME"},
		{"witnesses a " + a + "\n", `line 1: unknown keyword "witnesses"`},
		{"witness a\n", "line 1: want witness NAME VKEY [URL]"},
		{"witness a " + a + " https://a.example extra\n", "line 1: want witness NAME VKEY [URL]"},
		{"\nwitness a " + plain + "\n", "line 2: witness a: verifier key"},
		{"witness a a.example+00000000+AAAA\n", "line 1: witness a: verifier key"},
		{"witness a " + a + " ftp://a.example\n", "line 1: witness a: witness URL"},
		{"witness a " + a + "\nwitness a " + b + "\n", `line 2: "a" is already defined`},
		{"witness a " + a + "\nwitness b " + a + "\n", "line 2: witness b has the key of witness a"},
		{"witness none " + a + "\n", "line 1: the name none is reserved"},
		{"witness a " + a + "\ngroup g 2 a\n", `line 2: group g: threshold "2": want all, any or a number from 1 to 1`},
		{"witness a " + a + "\ngroup g 0 a\n", `threshold "0"`},
		{"witness a " + a + "\ngroup g 01 a\n", `threshold "01"`},
		{"witness a " + a + "\ngroup g any a a\n", `line 2: group g: "a" is listed twice`},
		{"witness a " + a + "\ngroup g any a b\n", `line 2: group g: "b" is not defined on a line above`},
		{"group g any g\n", `"g" is not defined on a line above`},
		{"witness a " + a + "\ngroup g any\n", "line 2: want group NAME"},
		{"log\n", "line 1: want log VKEY [URL]"},
		{"log nonsense\n", "line 1: log:"},
	} {
		if _, err := tlog.ParsePolicy([]byte(tc.src)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePolicy(%.60q) = %v, want an error saying %q", tc.src, err, tc.want)
		}
	}
}

func TestParsePolicyBounds(t *testing.T) {
	big := bytes.Repeat([]byte("# padding\n"), tlog.MaxPolicyBytes/10+1)
	if _, err := tlog.ParsePolicy(append(big, "quorum none\n"...)); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("a policy beyond MaxPolicyBytes: %v", err)
	}
	path := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(path, append(big, "quorum none\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tlog.ReadPolicyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("ReadPolicyFile of a huge file: %v", err)
	}
	var src strings.Builder
	for i := range tlog.MaxPolicyWitnesses + 1 {
		_, vkey, err := tlog.GenerateCosignerKey(tlog.CosignatureEd25519, fmt.Sprintf("w%d.example", i))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&src, "witness w%d %s\n", i, vkey)
	}
	src.WriteString("quorum w0\n")
	want := fmt.Sprintf("line %d: more than %d witnesses", tlog.MaxPolicyWitnesses+1, tlog.MaxPolicyWitnesses)
	if _, err := tlog.ParsePolicy([]byte(src.String())); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("too many witnesses: %v, want %q", err, want)
	}
}

// TestPolicyCosignatures checks a checkpoint's lines one by one: the
// policy witnesses' valid cosignatures, a corrupted one, and the lines of
// the log and of strangers, ignored.
func TestPolicyCosignatures(t *testing.T) {
	k := newPolicyKeys(t, "a", "pq1", "pq2", "stranger")
	key := newKey(t, "plc.test/tlog")
	p, err := tlog.ParsePolicy(fmt.Appendf(nil, "witness a %s\nwitness pq1 %s\nwitness pq2 %s\ngroup g all a pq1 pq2\nquorum g\n", k.vkeys["a"], k.vkeys["pq1"], k.vkeys["pq2"]))
	if err != nil {
		t.Fatal(err)
	}
	text := cosigTestCheckpoint("plc.test/tlog", 42)
	signed, err := note.Sign(&note.Note{Text: text}, key.Signer, k.cosigners["a"], k.cosigners["pq1"], k.cosigners["pq2"], k.cosigners["stranger"])
	if err != nil {
		t.Fatal(err)
	}
	c := p.Cosignatures(signed)
	if len(c.Verified) != 3 || len(c.Invalid) != 0 || !p.Satisfied(c.Verified) {
		t.Fatalf("Cosignatures = %+v", c)
	}
	// Corrupt pq2's line: it is invalid, and the quorum is not met.
	lines := strings.Split(string(signed), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "— pq2.example/witness ") {
			_, b64, _ := strings.Cut(strings.TrimPrefix(l, "— "), " ")
			raw, _ := base64.StdEncoding.DecodeString(b64)
			raw[len(raw)-1] ^= 1
			lines[i] = "— pq2.example/witness " + base64.StdEncoding.EncodeToString(raw)
		}
	}
	c = p.Cosignatures([]byte(strings.Join(lines, "\n")))
	if len(c.Verified) != 2 || len(c.Invalid) != 1 || c.Invalid[0] != k.vkeys["pq2"] || p.Satisfied(c.Verified) {
		t.Fatalf("Cosignatures with a corrupted line = %+v", c)
	}
	// A cosignature of another checkpoint is invalid too.
	otherSigned, _ := note.Sign(&note.Note{Text: cosigTestCheckpoint("plc.test/tlog", 43)}, k.cosigners["a"])
	moved := append([]byte(text+"\n"), otherSigned[bytes.LastIndex(otherSigned, []byte("\n\n"))+2:]...)
	if c := p.Cosignatures(moved); len(c.Invalid) != 1 || len(c.Verified) != 0 {
		t.Fatalf("Cosignatures of a line moved from another checkpoint = %+v", c)
	}
}

// TestREADMEPolicyExample: the policy of the README parses as written,
// and a log can meet its quorum with the witnesses it can ask.
func TestREADMEPolicyExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "```\n# witnesses.policy")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("the README has no witnesses.policy example")
	}
	p, err := tlog.ParsePolicy([]byte("# witnesses.policy" + block))
	if err != nil {
		t.Fatalf("the README's policy: %v", err)
	}
	if err := p.CheckReachable(); err != nil {
		t.Fatal(err)
	}
	if len(p.Witnesses()) != 2 || p.Quorum() != 2 {
		t.Fatalf("the README's policy: %d witnesses to ask, quorum %d; it says 2 and 2", len(p.Witnesses()), p.Quorum())
	}
}

// FuzzParsePolicy: ParsePolicy never panics, and a policy it accepts is
// consistent: the witnesses a log asks meet the quorum when
// CheckReachable accepts it, and the least cosignatures Quorum names are
// none exactly when nothing is needed.
func FuzzParsePolicy(f *testing.F) {
	var vkeys []string
	for _, n := range []string{"a.example/w", "b.example/w"} {
		_, v, err := tlog.GenerateCosignerKey(tlog.CosignatureEd25519, n)
		if err != nil {
			f.Fatal(err)
		}
		vkeys = append(vkeys, v)
	}
	f.Add(fmt.Sprintf("witness a %s https://a.example\nwitness b %s\ngroup g any a b\nquorum g\n", vkeys[0], vkeys[1]))
	f.Add(fmt.Sprintf("witness a %s https://a.example # c\nwitness b %s https://b.example\ngroup g 2 a b\ngroup h all g a\nquorum h\n", vkeys[0], vkeys[1]))
	f.Add("quorum none\n")
	f.Add("group g any\nquorum g\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := tlog.ParsePolicy([]byte(src))
		if err != nil {
			return
		}
		var asked []string
		for _, w := range p.Witnesses() {
			asked = append(asked, w.VKey)
		}
		if p.CheckReachable() == nil && !p.Satisfied(asked) {
			t.Fatalf("CheckReachable accepts a policy its witnesses cannot meet:\n%s", src)
		}
		if (p.Quorum() == 0) != p.Satisfied(nil) {
			t.Fatalf("Quorum() = %d but Satisfied(nil) = %v:\n%s", p.Quorum(), p.Satisfied(nil), src)
		}
	})
}
