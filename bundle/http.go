package bundle

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/plcdir/plc/tlog"
)

// Handler serves the bundle folder dir read-only: GET or HEAD of /NAME,
// where NAME is the index or a bundle file (nothing else: no listing, no
// other file, no path). Bundle files are immutable (Cache-Control:
// public, max-age=31536000, immutable); the index changes with each
// Write (no-cache). Ranges and conditional requests are served as
// net/http does for files.
func Handler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			tlog.WriteJSONError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/")
		if !fileNameRE.MatchString(name) {
			tlog.WriteJSONError(w, http.StatusNotFound, "Not Found: not a file of the bundle folder")
			return
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				tlog.WriteJSONError(w, http.StatusNotFound, "Not Found")
			} else {
				tlog.WriteJSONError(w, http.StatusServiceUnavailable, "the bundle folder cannot be read")
			}
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			tlog.WriteJSONError(w, http.StatusNotFound, "Not Found")
			return
		}
		if name == IndexName {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-cache")
		} else {
			w.Header().Set("Content-Type", "application/zstd")
			w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		http.ServeContent(w, r, name, fi.ModTime(), f)
	})
}
