package keyfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/plcdir/plc/internal/keyfile"
)

func TestCreateWritesAPrivateFileOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "k.key")
	if err := keyfile.Create(path, "secret\n"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := keyfile.Create(path, "other\n"); !errors.Is(err, keyfile.ErrExists) {
		t.Fatalf("second create: %v, want ErrExists", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "secret\n" {
		t.Errorf("the key was overwritten: %q", b)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".key-*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestCreateByManyAtOnceLeavesOneWholeKey: of creators racing for one
// path, exactly one wins and the file holds its whole text.
func TestCreateByManyAtOnceLeavesOneWholeKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.key")
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		won []string
	)
	for i := range 16 {
		wg.Go(func() {
			text := string(rune('a'+i)) + "-key\n"
			if err := keyfile.Create(path, text); err == nil {
				mu.Lock()
				won = append(won, text)
				mu.Unlock()
			} else if !errors.Is(err, keyfile.ErrExists) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("%d creators won, want 1", len(won))
	}
	if b, _ := os.ReadFile(path); string(b) != won[0] {
		t.Errorf("the file holds %q, the winner wrote %q", b, won[0])
	}
}
