// Package keyfile writes the directory's secret key files: whole or not at
// all, mode 0600, never over an existing file.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrExists: a file is already at the path; it was left as it is.
var ErrExists = errors.New("refusing to overwrite a key")

// Create writes text to a new file at path, mode 0600, creating its
// directory (mode 0700) if need be. The text is written and synced under a
// temporary name in the same directory, then linked to path: a reader
// never sees half a key, and of processes creating the same file at once
// exactly one succeeds (the others get ErrExists and may read the winner's).
func Create(path, text string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".key-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Link(f.Name(), path); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: %w", path, ErrExists)
	} else if err != nil {
		return err
	}
	return nil
}
