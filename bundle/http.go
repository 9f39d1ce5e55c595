package bundle

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
			writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed")
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/")
		if !fileNameRE.MatchString(name) {
			writeError(w, http.StatusNotFound, "Not Found: not a file of the bundle folder")
			return
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				writeError(w, http.StatusNotFound, "Not Found")
			} else {
				writeError(w, http.StatusServiceUnavailable, "the bundle folder cannot be read")
			}
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			writeError(w, http.StatusNotFound, "Not Found")
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

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Write(b)
}
