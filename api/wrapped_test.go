package api

import (
	"net"
	"testing"
)

// TestStreamSendBufferReachesTCPThroughListenerWrappers: the stream's cap
// on a never-reading client relies on the kernel send buffer; the
// connection limiter and the transport's JSON errors wrap every
// connection plc serve accepts, and must not hide the TCP connection.
func TestStreamSendBufferReachesTCPThroughListenerWrappers(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := NewConnLimiter(ConnLimits{MaxConns: 10, MaxPerIP: 10})
	ln := lim.Listener(TransportErrorsAsJSON(raw))
	defer ln.Close()
	go func() {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err == nil {
			defer c.Close()
			buf := make([]byte, 1)
			c.Read(buf)
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); ok {
		t.Fatal("the listener did not wrap the connection: the test proves nothing")
	}
	if !setWriteBuffer(c, 64<<10) {
		t.Fatalf("the send buffer of a %T was not set", c)
	}
}
