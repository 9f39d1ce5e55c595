// Command hostile-upstream serves one hostile directory (see package
// hostile) for a mirror to be pointed at, and prints its URL:
//
//	go run ./internal/hostile/cmd/hostile-upstream -mode junk -line 30000
//	plc mirror --upstream <the URL printed> …
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/plcdir/plc/internal/hostile"
)

func main() {
	var modes []string
	for _, m := range hostile.Modes {
		modes = append(modes, string(m))
	}
	mode := flag.String("mode", string(hostile.Junk), "the attack: "+strings.Join(modes, ", "))
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	line := flag.Int("line", 1024, "bytes of a junk line")
	target := flag.String("target", "http://169.254.169.254/latest/meta-data/", "where -mode redirect points")
	flag.Parse()
	known := false
	for _, m := range hostile.Modes {
		known = known || string(m) == *mode
	}
	if !known {
		fmt.Fprintf(os.Stderr, "hostile-upstream: unknown -mode %q: want one of %s\n", *mode, strings.Join(modes, ", "))
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hostile-upstream: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("http://" + ln.Addr().String())
	err = http.Serve(ln, hostile.Handler(hostile.Config{Mode: hostile.Mode(*mode), LineBytes: *line, Target: *target}))
	fmt.Fprintf(os.Stderr, "hostile-upstream: %v\n", err)
	os.Exit(1)
}
