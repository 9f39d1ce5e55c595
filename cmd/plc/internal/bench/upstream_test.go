package bench

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// exportLine is a seq-mode export line as far as the stand-in upstream
// reads one (its head).
func exportLine(seq int) string {
	return fmt.Sprintf(`{"did":"did:plc:aaaaaaaaaaaaaaaaaaaaaaaa","operation":{},"cid":"bafy%d","nullified":false,"createdAt":"2024-01-01T00:00:00.000Z","type":"sequenced_op","seq":%d}`, seq, seq)
}

func writeFile(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "export.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpstreamServesPagesAfterASeq: pages hold the lines after the seq
// asked for, at most count (and at most the directory's 1,000), whatever
// gaps the seqs have; bad parameters and other paths are 4xx with a JSON
// message.
func TestUpstreamServesPagesAfterASeq(t *testing.T) {
	seqs := []int{2, 3, 5, 8, 13}
	var lines []string
	for _, s := range seqs {
		lines = append(lines, exportLine(s))
	}
	up, err := loadUpstream(writeFile(t, lines...)) // the last line has no newline
	if err != nil {
		t.Fatal(err)
	}
	defer up.f.Close()
	get := func(target string) (int, string) {
		w := httptest.NewRecorder()
		up.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		return w.Code, w.Body.String()
	}
	for _, c := range []struct {
		target string
		want   []int
	}{
		{"/export?after=0&count=2", []int{2, 3}},
		{"/export?after=3&count=2", []int{5, 8}},
		{"/export?after=4&count=1000", []int{5, 8, 13}},
		{"/export?after=13&count=10", nil},
		{"/export?count=5000", []int{2, 3, 5, 8, 13}},
	} {
		code, body := get(c.target)
		var want string
		for _, s := range c.want {
			want += exportLine(s) + "\n"
		}
		if code != http.StatusOK || body != want {
			t.Errorf("GET %s: %d %q, want 200 %q", c.target, code, body, want)
		}
	}
	for target, want := range map[string]int{
		"/export?after=x":         http.StatusBadRequest,
		"/export?after=-1":        http.StatusBadRequest,
		"/export?count=0":         http.StatusBadRequest,
		"/did:plc:aaaaaaaaaaaaaa": http.StatusNotFound,
	} {
		if code, body := get(target); code != want || !strings.HasPrefix(body, `{"message":`) {
			t.Errorf("GET %s: %d %q, want %d with a JSON message", target, code, body, want)
		}
	}
}

// TestUpstreamRefusesWhatIsNotASeqModeExport: a line without a seq, seqs
// out of order, or a line that is not an export line are refused when the
// file is read, naming the line.
func TestUpstreamRefusesWhatIsNotASeqModeExport(t *testing.T) {
	noSeq := strings.Replace(exportLine(1), `,"type":"sequenced_op","seq":1`, "", 1)
	for name, c := range map[string]struct {
		lines []string
		want  string
	}{
		"no seq":       {[]string{exportLine(1), noSeq}, "line 2 has no seq"},
		"out of order": {[]string{exportLine(2), exportLine(2)}, "line 2: seq 2 does not follow 2"},
		"not a line":   {[]string{"not json"}, "line 1:"},
	} {
		if _, err := loadUpstream(writeFile(t, c.lines...)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

// TestUpstreamReadsPagesFromTheFileNotFromMemory: the stand-in keeps an
// index of the file's lines, not their bytes, which would weigh as much
// as the export on the machine whose mirror is being measured. A line
// rewritten in place (same length) after the file was indexed is served
// as it is now.
func TestUpstreamReadsPagesFromTheFileNotFromMemory(t *testing.T) {
	path := writeFile(t, exportLine(1), exportLine(2))
	up, err := loadUpstream(path)
	if err != nil {
		t.Fatal(err)
	}
	defer up.f.Close()
	second := exportLine(2)
	rewritten := strings.Replace(second, `"nullified":false`, `"nullified":fals3`, 1)
	if err := os.WriteFile(path, []byte(exportLine(1)+"\n"+rewritten), 0o600); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	up.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/export?after=1", nil))
	if got, want := w.Body.String(), rewritten+"\n"; got != want {
		t.Fatalf("page after seq 1 = %q, want the line as the file holds it now, %q", got, want)
	}
}
