package interop

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/mod/sumdb/note"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/tlog"
	"github.com/plcdir/plc/validate"
)

// toolPackages are the third-party commands the tests run, at the versions
// tools/go.mod pins.
var toolPackages = []string{
	"filippo.io/torchwood/cmd/litewitness",
	"filippo.io/torchwood/cmd/witnessctl",
	"github.com/transparency-dev/tessera/cmd/fsck",
	"github.com/bluesky-social/indigo/cmd/goat",
	// A thin command around torchwood's tile client (Client, TileFetcher).
	"./tileclient",
}

// waitBound bounds every wait for a child process to say something: a
// bound on a hang, not a pause (nothing waits for it to pass).
const waitBound = 2 * time.Minute

// logOps is the size of the logs the tests build: two full entry bundles
// and level-0 tiles, a partial one of 88, and a partial level-1 tile of 2.
const logOps = 600

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// bins builds plc and the tools once per run into a temporary directory
// (Go's build cache keeps the compiled packages between runs) and returns
// it. A build that fails is a test failure, except that without the Go
// module proxy, and without PLC_REQUIRE_INTEROP, the tests skip.
func bins(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds third-party tools and runs plc serve")
	}
	buildOnce.Do(build)
	if buildErr != nil {
		if why := skipWhy(); why != nil {
			t.Skipf("%v, so the tools cannot be built; PLC_REQUIRE_INTEROP=1 makes this a failure\n%v", why, buildErr)
		}
		t.Fatal(buildErr)
	}
	return binDir
}

// skipWhy returns why a failed build of the tools may skip the tests, or
// nil when it must fail them: it may skip only when PLC_REQUIRE_INTEROP is
// unset and the Go module proxy cannot be reached.
func skipWhy() error {
	if os.Getenv("PLC_REQUIRE_INTEROP") != "" {
		return nil
	}
	if err := proxyReachable(); err != nil {
		return fmt.Errorf("the Go module proxy cannot be reached (%v)", err)
	}
	return nil
}

func build() {
	dir, err := os.MkdirTemp("", "plc-interop-")
	if err != nil {
		buildErr = err
		return
	}
	binDir = dir
	goCmd := func(workdir string, args ...string) error {
		cmd := exec.Command("go", args...)
		cmd.Dir = workdir
		// No C compiler needed: every tool builds in pure Go.
		cmd.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), workdir, err, out)
		}
		return nil
	}
	if buildErr = goCmd(".", "build", "-o", filepath.Join(dir, "plc"), "../../cmd/plc"); buildErr != nil {
		return
	}
	buildErr = goCmd("tools", append([]string{"build", "-o", dir + string(os.PathSeparator)}, toolPackages...)...)
}

// proxyReachable reports whether the first module proxy of GOPROXY
// answers at all (any HTTP status will do).
func proxyReachable() error {
	out, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil {
		return fmt.Errorf("go env GOPROXY: %v", err)
	}
	for _, p := range strings.FieldsFunc(strings.TrimSpace(string(out)), func(r rune) bool { return r == ',' || r == '|' }) {
		switch p {
		case "off":
			return errors.New("GOPROXY=off")
		case "direct":
			continue
		}
		c := &http.Client{Timeout: 15 * time.Second}
		resp, err := c.Get(strings.TrimSuffix(p, "/") + "/filippo.io/torchwood/@v/list")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	return errors.New("GOPROXY names no proxy")
}

// proc is a running child process whose standard error is kept line by
// line, so that a test can wait for what it says instead of polling.
type proc struct {
	name    string
	cmd     *exec.Cmd
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced at each line, and at exit
	exited  bool
	done    chan struct{}
}

func start(t *testing.T, dir, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: filepath.Base(bin), cmd: cmd, changed: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		cmd.Wait()
		p.mu.Lock()
		p.exited = true
		close(p.changed)
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitFor returns the first line of p's standard error that match
// accepts, waiting for it as the lines come; it fails the test when p
// exits first or says nothing of the kind within waitBound.
func (p *proc) waitFor(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	return p.waitForUnless(t, what, match, func(string) bool { return false })
}

// waitForUnless is waitFor that fails the test at once on a line that
// fail accepts before one that match accepts.
func (p *proc) waitForUnless(t *testing.T, what string, match, fail func(string) bool) string {
	t.Helper()
	bound := time.NewTimer(waitBound)
	defer bound.Stop()
	seen := 0
	for {
		p.mu.Lock()
		lines, changed, exited := p.lines[seen:], p.changed, p.exited
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l
			}
			if fail(l) {
				t.Fatalf("%s, waiting for %s: %s", p.name, what, l)
			}
		}
		if exited {
			t.Fatalf("%s exited before %s; its log:\n%s", p.name, what, p.log())
		}
		select {
		case <-changed:
		case <-bound.C:
			t.Fatalf("%s: no %s within %v; its log:\n%s", p.name, what, waitBound, p.log())
		}
	}
}

// logMsg matches a JSON log line of plc with message msg whose fields
// include want.
func logMsg(msg string, want map[string]any) func(string) bool {
	return func(line string) bool {
		var l map[string]any
		if json.Unmarshal([]byte(line), &l) != nil || l["msg"] != msg {
			return false
		}
		for k, v := range want {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				return false
			}
		}
		return true
	}
}

// freePort returns a loopback address with a port below 32768 (outside
// the kernel's ephemeral range, so no outgoing connection takes it
// meanwhile) that nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+mrand.IntN(12768))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatal("no free port below 32768")
	return ""
}

// run runs a command to its end and returns its standard output.
func run(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// newLog makes a checkpoint key for a log served at addr, with the
// origin C2SP recommends (the URL prefix without its scheme), and a
// database holding logOps ops imported from a generated export. It
// returns the key file and the verifier key.
func newLog(t *testing.T, bin, dir, addr string) (keyFile, vkey string) {
	t.Helper()
	keyFile = filepath.Join(dir, "log.key")
	vkey = strings.TrimSpace(run(t, dir, filepath.Join(bin, "plc"), "keygen", "--out", keyFile, "--origin", addr+"/tlog"))
	export := filepath.Join(dir, "ops.jsonl")
	run(t, dir, filepath.Join(bin, "plc"), "bench", "gen", "--ops", fmt.Sprint(logOps), "--seed", "16", "--out", export)
	run(t, dir, filepath.Join(bin, "plc"), "import", "--db", filepath.Join(dir, "plc.db"), export)
	return keyFile, vkey
}

// servePLC starts plc serve on addr over dir's database and returns once
// it listens.
func servePLC(t *testing.T, bin, dir, addr string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"serve", "--db", filepath.Join(dir, "plc.db"), "--listen", addr,
		"--log-format", "json", "--log-level", "debug", "--no-ui"}, extra...)
	p := start(t, dir, filepath.Join(bin, "plc"), args...)
	p.waitFor(t, "its listening line", logMsg("plc serve listening", nil))
	return p
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, b)
	}
	return b
}

func post(t *testing.T, url, did string, op *validate.Op) {
	t.Helper()
	resp, err := http.Post(url+"/"+did, "application/json", bytes.NewReader(op.AppendJSON(nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /%s: %d %s", did, resp.StatusCode, b)
	}
}

// sshAgent serves an ssh-agent holding a new Ed25519 key on a unix socket
// in dir (litewitness signs through one) and returns the socket and the
// key's SHA256 fingerprint.
func sshAgent(t *testing.T, dir string) (sock, fingerprint string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				agent.ServeAgent(kr, c)
			})
		}
	})
	return sock, ssh.FingerprintSHA256(signer.PublicKey())
}

// textField returns the value of key in a slog text line.
func textField(line, key string) string {
	_, v, ok := strings.Cut(line, " "+key+"=")
	if !ok {
		return ""
	}
	v, _, _ = strings.Cut(v, " ")
	return strings.Trim(v, `"`)
}

// dialUntilUp returns once addr accepts a TCP connection: litewitness
// says it listens just before it binds. Each attempt is refused at once
// or connects; the loop is bounded by waitBound.
func dialUntilUp(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(waitBound)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never accepted a connection: %v", addr, err)
		}
	}
}

// cosignedCheckpoint fetches the log's checkpoint and checks, with the
// note package and plc's cosignature verifier, that it carries the log's
// signature and the witness's cosignature.
func cosignedCheckpoint(t *testing.T, url, vkey, witnessVKey string) plc.CheckpointBody {
	t.Helper()
	b := get(t, url+"/tlog/checkpoint")
	logV, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	wV, err := tlog.NewCosignatureVerifier(witnessVKey)
	if err != nil {
		t.Fatalf("litewitness's verifier key %q: %v", witnessVKey, err)
	}
	n, err := note.Open(b, note.VerifierList(logV, wV))
	if err != nil {
		t.Fatalf("checkpoint: %v\n%s", err, b)
	}
	var names []string
	for _, s := range n.Sigs {
		names = append(names, s.Name)
	}
	if len(n.Sigs) != 2 || !strings.Contains(strings.Join(names, " "), wV.Name()) {
		t.Fatalf("checkpoint verified by %v, want the log and the witness %s:\n%s", names, wV.Name(), b)
	}
	body, err := plc.ParseCheckpointBody(n.Text)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// witnessState returns the size and root hash litewitness holds for
// origin, as witnessctl lists them.
func witnessState(t *testing.T, bin, dir, db, origin string) (int64, string) {
	t.Helper()
	out := run(t, dir, filepath.Join(bin, "witnessctl"), "list-logs", "-db", db)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var l struct {
			Origin string `json:"origin"`
			Size   int64  `json:"size"`
			Root   string `json:"root_hash"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Origin == origin {
			return l.Size, l.Root
		}
	}
	t.Fatalf("witnessctl lists no log %s:\n%s", origin, out)
	return 0, ""
}

// litewitness, a C2SP tlog-witness, cosigns plc's checkpoints: the
// checkpoint plc serves carries a cosignature that plc's verifier and the
// note package accept, and the witness holds the same tree; when the log
// grows, the witness accepts plc's consistency proof and cosigns again.
func TestLitewitnessCosignsTheCheckpoints(t *testing.T) {
	bin := bins(t)
	dir := t.TempDir()
	addr := freePort(t)
	origin := addr + "/tlog"
	keyFile, vkey := newLog(t, bin, dir, addr)

	db := filepath.Join(dir, "witness.db")
	run(t, dir, filepath.Join(bin, "witnessctl"), "add-log", "-db", db, "-origin", origin)
	run(t, dir, filepath.Join(bin, "witnessctl"), "add-key", "-db", db, "-origin", origin, "-key", vkey)
	sock, fingerprint := sshAgent(t, dir)
	waddr := freePort(t)
	w := start(t, dir, filepath.Join(bin, "litewitness"), "-name", "witness.test/interop", "-db", db,
		"-ssh-agent", sock, "-key", fingerprint, "-listen", waddr)
	wvkey := textField(w.waitFor(t, "its verifier key", func(l string) bool { return strings.Contains(l, `msg="verifier key"`) }), "vkey")
	w.waitFor(t, "its listening line", func(l string) bool { return strings.Contains(l, "msg=listening") })
	dialUntilUp(t, waddr)

	p := servePLC(t, bin, dir, addr, "--checkpoint-key", keyFile, "--witness", "http://"+waddr+"="+wvkey)
	url := "http://" + addr
	// A witness that refuses a checkpoint or a proof fails the test at
	// once.
	refused := logMsg("a witness did not cosign the checkpoint", nil)
	p.waitForUnless(t, "a cosigned checkpoint of the imported ops", logMsg("checkpoint cosigned", map[string]any{"size": logOps}), refused)
	cp := cosignedCheckpoint(t, url, vkey, wvkey)
	if cp.Size != logOps || cp.Origin != origin {
		t.Fatalf("checkpoint %+v, want %d entries of %s", cp, logOps, origin)
	}
	if size, root := witnessState(t, bin, dir, db, origin); size != cp.Size || root != base64.StdEncoding.EncodeToString(cp.Root[:]) {
		t.Fatalf("litewitness holds size %d root %s, the log %d %x", size, root, cp.Size, cp.Root)
	}

	// The log grows by a create and an update: the witness follows with a
	// consistency proof from the size it holds.
	id := optest.NewIdentity(t, "witnessed.test", 1)
	post(t, url, id.DID, id.Head)
	post(t, url, id.DID, id.Update(t, nil, 0, "witnessed2.test"))
	p.waitForUnless(t, "a cosigned checkpoint of the grown log", logMsg("checkpoint cosigned", map[string]any{"size": logOps + 2}), refused)
	cp2 := cosignedCheckpoint(t, url, vkey, wvkey)
	if cp2.Size != logOps+2 {
		t.Fatalf("checkpoint of %d entries, want %d", cp2.Size, logOps+2)
	}
	if size, root := witnessState(t, bin, dir, db, origin); size != cp2.Size || root != base64.StdEncoding.EncodeToString(cp2.Root[:]) {
		t.Fatalf("litewitness holds size %d root %s, the log %d %x", size, root, cp2.Size, cp2.Root)
	}
}

// fsck runs tessera's fsck against the tlog-tiles log at url and reports
// whether it found the log sound. fsck logs its verdict ("fsck failed")
// rather than setting its exit status, so both count.
func fsck(t *testing.T, bin, dir, url, pubFile string) (ok bool, out string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "fsck"), "--storage_url", url, "--public_key", pubFile, "--ui=false", "-N", "4", "-v", "1")
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	return err == nil && !bytes.Contains(b, []byte("fsck failed")), string(b)
}

// Two tlog-tiles clients of other projects read plc's log end to end.
// tessera's fsck recomputes the whole tree from the entry bundles and hash
// tiles, full and partial, and finds the root of the signed checkpoint;
// served through a proxy that changes one byte of the partial entry
// bundle, the same fsck fails: the check is real. torchwood's client reads
// every entry, authenticated against the checkpoint's tree, and the
// entries are the imported ops, in order.
func TestTileClientsVerifyTheLog(t *testing.T) {
	bin := bins(t)
	dir := t.TempDir()
	addr := freePort(t)
	keyFile, vkey := newLog(t, bin, dir, addr)
	servePLC(t, bin, dir, addr, "--checkpoint-key", keyFile)
	url := "http://" + addr

	// The first checkpoint is signed when it is asked for.
	logV, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	cp, _, err := tlog.OpenCheckpoint(get(t, url+"/tlog/checkpoint"), logV)
	if err != nil || cp.Size != logOps {
		t.Fatalf("checkpoint %+v %v, want %d entries", cp, err, logOps)
	}
	pub := filepath.Join(dir, "log.pub")
	if err := os.WriteFile(pub, []byte(vkey), 0o644); err != nil {
		t.Fatal(err)
	}
	ok, out := fsck(t, bin, dir, url+"/tlog/", pub)
	if !ok || !strings.Contains(out, fmt.Sprintf("Successfully fsck'd log with size %d", logOps)) {
		t.Fatalf("fsck of the log failed:\n%s", out)
	}
	t.Logf("fsck:\n%s", out)

	tc := strings.Split(strings.TrimSuffix(run(t, dir, filepath.Join(bin, "tileclient"), "-url", url+"/tlog/", "-vkey", vkey), "\n"), "\n")
	if want := fmt.Sprintf("%s %d", cp.Origin, logOps); tc[0] != want {
		t.Fatalf("torchwood's client read the checkpoint %q, want %q", tc[0], want)
	}
	exported := exportedOps(t, filepath.Join(dir, "ops.jsonl"))
	if len(tc)-1 != len(exported) {
		t.Fatalf("torchwood's client read %d entries, want %d", len(tc)-1, len(exported))
	}
	for i, line := range tc[1:] {
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		l, err := plc.ParseLeaf(b)
		if err != nil {
			t.Fatalf("entry %d is no plc leaf: %v", i, err)
		}
		if e := exported[i]; l.Seq != int64(i)+1 || l.DID != e.DID || l.CID != e.CID {
			t.Fatalf("entry %d holds seq %d %s %s, want seq %d %s %s", i, l.Seq, l.DID, l.CID, i+1, e.DID, e.CID)
		}
	}

	partial := fmt.Sprintf("/tlog/tile/entries/%03d.p/%d", logOps/256, logOps%256)
	tampered := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(url + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if r.URL.Path == partial && len(b) > 0 {
			b[len(b)-1] ^= 1
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		w.Write(b)
	}))
	defer tampered.Close()
	ok, out = fsck(t, bin, dir, tampered.URL+"/tlog/", pub)
	if ok {
		t.Fatalf("fsck accepted a log whose entry bundle %s was changed:\n%s", partial, out)
	}
	cmd := exec.Command(filepath.Join(bin, "tileclient"), "-url", tampered.URL+"/tlog/", "-vkey", vkey)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("torchwood's client read a log whose entry bundle %s was changed:\n%.2000s", partial, b)
	}

}

// exportedOps reads the DID and CID of each line of a seq-mode export.
func exportedOps(t *testing.T, file string) []struct{ DID, CID string } {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var ops []struct{ DID, CID string }
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var l struct {
			DID string `json:"did"`
			CID string `json:"cid"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, struct{ DID, CID string }{l.DID, l.CID})
	}
	return ops
}

// goatJSON decodes the JSON values goat printed one after another.
func goatJSON(t *testing.T, out string) []map[string]any {
	t.Helper()
	var vs []map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var v map[string]any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return vs
		}
		if err != nil {
			t.Fatalf("goat printed something other than JSON: %v\n%s", err, out)
		}
		vs = append(vs, v)
	}
}

func opJSON(t *testing.T, op *validate.Op) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(op.AppendJSON(nil), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// goat, the atproto CLI, reads DIDs from plc: a DID created and updated
// on plc serve has, for goat plc history, exactly the two signed ops, and
// goat plc dump (the legacy timestamp-cursor export) lists both in order.
// The pinned goat cannot create or update a DID against a directory
// without a PDS (see the package doc and README), so the test signs and
// posts the ops itself.
func TestGoatReadsDIDs(t *testing.T) {
	bin := bins(t)
	dir := t.TempDir()
	addr := freePort(t)
	servePLC(t, bin, dir, addr)
	url := "http://" + addr

	id := optest.NewIdentity(t, "goat.test", 2)
	create := id.Head
	post(t, url, id.DID, create)
	update := id.Update(t, nil, 1, "goat2.test")
	post(t, url, id.DID, update)
	goat := filepath.Join(bin, "goat")

	got := goatJSON(t, run(t, dir, goat, "plc", "--plc-directory", url, "history", id.DID))
	want := []map[string]any{opJSON(t, create), opJSON(t, update)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("goat plc history %s:\n got %v\nwant %v", id.DID, got, want)
	}

	var cids []string
	for _, line := range goatJSON(t, run(t, dir, goat, "plc", "--plc-directory", url, "dump")) {
		if line["did"] != id.DID {
			t.Fatalf("goat plc dump: a line of another DID: %v", line)
		}
		cids = append(cids, fmt.Sprint(line["cid"]))
	}
	if want := []string{create.CID(), update.CID()}; !reflect.DeepEqual(cids, want) {
		t.Fatalf("goat plc dump lists %v, want %v", cids, want)
	}
}

// The interop tests may skip only when the Go module proxy cannot be
// reached and PLC_REQUIRE_INTEROP is unset: a build failure with the proxy
// up, or under PLC_REQUIRE_INTEROP, is a failure.
func TestInteropSkipsOnlyWithoutTheProxy(t *testing.T) {
	up := httptest.NewServer(http.NotFoundHandler())
	defer up.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	for _, tc := range []struct {
		proxy, require string
		skip           bool
	}{
		{up.URL, "", false},
		{up.URL + ",direct", "", false},
		{down.URL, "", true},
		{"off", "", true},
		{"direct", "", true},
		{down.URL, "1", false},
		{"off", "1", false},
	} {
		t.Setenv("GOPROXY", tc.proxy)
		t.Setenv("PLC_REQUIRE_INTEROP", tc.require)
		if why := skipWhy(); (why != nil) != tc.skip {
			t.Errorf("GOPROXY=%s PLC_REQUIRE_INTEROP=%q: skip reason %v, want skip %v", tc.proxy, tc.require, why, tc.skip)
		}
	}
}
