package client

import (
	"net/url"
	"testing"
)

func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"http://h/x", "http://h/y?q", true},
		{"http://H:80/", "http://h", true},
		{"https://h", "https://h:443/p", true},
		{"ws://h/export/stream", "http://h", true},
		{"wss://h/export/stream", "https://h", true},
		{"http://h", "https://h", false},
		{"http://h:8080", "http://h", false},
		{"http://h", "http://h.evil", false},
		{"http://169.254.169.254/latest", "http://h", false},
		{"file:///etc/passwd", "http://h", false},
		{"gopher://h", "gopher://h", false},
	} {
		a, _ := url.Parse(c.a)
		b, _ := url.Parse(c.b)
		if got := sameOrigin(a, b); got != c.want {
			t.Errorf("sameOrigin(%s, %s) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
