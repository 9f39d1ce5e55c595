package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/client"
)

// TestAnswersOutsideTheRouteAreTypedErrors: every answer a route does not
// document is a *client.StatusError whose fields (never its text) say what
// it was, with what the directory sent as its Body, and whose URL and text
// hold no password.
func TestAnswersOutsideTheRouteAreTypedErrors(t *testing.T) {
	const did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
	big := bytes.Repeat([]byte("x"), 64)
	for _, tc := range []struct {
		name   string
		serve  func(w http.ResponseWriter)
		fetch  func(*client.Client) error
		status int
		class  error
		body   []byte
	}{
		{
			name:   "a status",
			serve:  func(w http.ResponseWriter) { w.WriteHeader(503); w.Write([]byte(`{"message":"busy"}`)) },
			fetch:  func(c *client.Client) error { _, err := c.Document(context.Background(), did); return err },
			status: 503, body: []byte(`{"message":"busy"}`),
		},
		{
			name:   "not registered",
			serve:  func(w http.ResponseWriter) { w.WriteHeader(404); w.Write([]byte(`{"message":"DID not registered"}`)) },
			fetch:  func(c *client.Client) error { _, _, err := c.AuditLog(context.Background(), did); return err },
			status: 404, class: client.ErrNotRegistered, body: []byte(`{"message":"DID not registered"}`),
		},
		{
			name:  "over the bound",
			serve: func(w http.ResponseWriter) { w.Write(big) },
			fetch: func(c *client.Client) error {
				_, err := c.WithMaxBody(10).Export(context.Background(), "0", 1)
				return err
			},
			class: client.ErrTooLong, body: big[:11],
		},
		{
			name: "cut off",
			serve: func(w http.ResponseWriter) {
				conn, buf, _ := w.(http.Hijacker).Hijack()
				defer conn.Close()
				fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"seq\":1")
				buf.Flush()
			},
			fetch: func(c *client.Client) error { _, err := c.SeqPage(context.Background(), 0, 1); return err },
			class: client.ErrCutOff, body: []byte(`{"seq":1`),
		},
		{
			name:  "not an audit log",
			serve: func(w http.ResponseWriter) { w.Write([]byte(`{"oops":true}`)) },
			fetch: func(c *client.Client) error { _, _, err := c.AuditLog(context.Background(), did); return err },
			class: client.ErrMalformed, body: []byte(`{"oops":true}`),
		},
		{
			name:  "a hash tile one byte too long",
			serve: func(w http.ResponseWriter) { w.Write(make([]byte, 2*tlog.HashSize+1)) },
			fetch: func(c *client.Client) error {
				_, err := c.Tile(context.Background(), tlog.Tile{H: 8, L: 0, N: 0, W: 2})
				return err
			},
			class: client.ErrTooLong, body: make([]byte, 2*tlog.HashSize+1),
		},
		{
			name:  "a POST's status",
			serve: func(w http.ResponseWriter) { w.WriteHeader(500); w.Write([]byte("no")) },
			fetch: func(c *client.Client) error {
				_, _, err := c.WithPeer("the witness").Post(context.Background(), "/add-checkpoint", "text/plain", []byte("old 0\n"), 8, http.StatusConflict)
				if err != nil && (!strings.HasPrefix(err.Error(), "POST ") || !strings.Contains(err.Error(), "the witness answered 500")) {
					return errors.New("not a POST the witness answered: " + err.Error())
				}
				return err
			},
			status: 500, body: []byte("no"),
		},
		{
			name:  "a POST's answer over the bound",
			serve: func(w http.ResponseWriter) { w.WriteHeader(409); w.Write(big) },
			fetch: func(c *client.Client) error {
				_, _, err := c.Post(context.Background(), "/add-checkpoint", "text/plain", nil, 10, http.StatusConflict)
				return err
			},
			class: client.ErrTooLong, body: big[:11],
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tc.serve(w) }))
			defer srv.Close()
			c, err := client.New(strings.Replace(srv.URL, "http://", "http://user:secret@", 1), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.fetch(c)
			se, ok := errors.AsType[*client.StatusError](err)
			if !ok {
				t.Fatalf("error %v, want a *client.StatusError", err)
			}
			if se.Status != tc.status || (tc.class != nil && !errors.Is(err, tc.class)) || !bytes.Equal(se.Body, tc.body) {
				t.Errorf("error %+v, want status %d, class %v, body %q", se, tc.status, tc.class, tc.body)
			}
			if strings.Contains(se.URL, "secret") || strings.Contains(err.Error(), "secret") || strings.Contains(c.String(), "secret") {
				t.Errorf("the password shows: %q, %q, %q", se.URL, err, c)
			}
		})
	}
}

// TestTilePaths: tiles are asked for at their C2SP tlog-tiles paths, entry
// bundles under entries/.
func TestTilePaths(t *testing.T) {
	for _, tc := range []struct {
		tile tlog.Tile
		want string
	}{
		{tlog.Tile{H: 8, L: 0, N: 0, W: 256}, "tile/0/000"},
		{tlog.Tile{H: 8, L: 1, N: 1234, W: 7}, "tile/1/x001/234.p/7"},
		{tlog.Tile{H: 8, L: -1, N: 5, W: 256}, "tile/entries/005"},
		{tlog.Tile{H: 8, L: -1, N: 5, W: 3}, "tile/entries/005.p/3"},
	} {
		if got := plc.TilePath(tc.tile); got != tc.want {
			t.Errorf("TilePath(%+v) = %q, want %q", tc.tile, got, tc.want)
		}
	}
}

// TestAnswersDoNotShareTheBufferTheyAreReadInto: the bodies of two answers
// read one after the other are each their own; the second does not
// overwrite the first, which the pipeline may still be reading.
func TestAnswersDoNotShareTheBufferTheyAreReadInto(t *testing.T) {
	pages := [][]byte{bytes.Repeat([]byte("a"), 100_000), bytes.Repeat([]byte("b"), 100_000), {}}
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(pages[n]); n++ }))
	defer srv.Close()
	c, err := client.New(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]byte
	for range pages {
		b, err := c.Export(context.Background(), "0", 1000)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	for i, b := range got {
		if !bytes.Equal(b, pages[i]) || b == nil {
			t.Errorf("answer %d: %d bytes beginning %q, want %d bytes of %q (not nil)", i, len(b), b[:min(len(b), 4)], len(pages[i]), pages[i][:min(len(pages[i]), 1)])
		}
	}
}

// BenchmarkExportPage reads an export page of 1,000 lines of 700 bytes
// over loopback HTTP: the time and the memory allocated per page.
func BenchmarkExportPage(b *testing.B) {
	line := append(bytes.Repeat([]byte("x"), 699), '\n')
	page := bytes.Repeat(line, 1000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(page) }))
	defer srv.Close()
	c, err := client.New(srv.URL, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(page)))
	for b.Loop() {
		body, err := c.Export(context.Background(), "0", 1000)
		if err != nil || len(body) != len(page) {
			b.Fatalf("%d bytes, %v", len(body), err)
		}
	}
}
