package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Errors and responses: the one place where an error becomes a status
// and the message a client is shown.

// httpError is a response chosen by a handler: its status and the message
// the client is shown.
type httpError struct {
	status  int
	message string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d %s", e.status, e.message) }

func notRegistered(did string) error {
	return &httpError{http.StatusNotFound, "DID not registered: " + did}
}

// nonPLCMessage is the reference's answer to a read of anything that is not
// a did:plc.
const nonPLCMessage = "Resolution of non-PLC DIDs not supported"

// readableDID decides, before any query, whether the read routes look a DID
// up: anything not of the did:plc method (another method, or not a DID at
// all) is a 400, as in the reference; a did:plc that is malformed can never
// be registered, so it is a 404 without a query.
func readableDID(did string) error {
	if !strings.HasPrefix(did, "did:plc:") {
		return &httpError{http.StatusBadRequest, nonPLCMessage}
	}
	if !validate.ValidDID(did) {
		return notRegistered(did)
	}
	return nil
}

// response maps an error to what the client is told: the one place where
// errors become statuses. internal reports a failure of ours, whose details
// are logged and not sent.
func response(err error) (status int, message string, retryAfter time.Duration, internal bool) {
	var (
		he       *httpError
		tooLarge *http.MaxBytesError
		conflict *oplog.ConflictError
		verdict  *validate.Error
		behind   *oplog.ClockBehindError
	)
	switch {
	case errors.As(err, &he):
		return he.status, he.message, 0, false
	case errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, "request entity too large", 0, false
	case errors.As(err, &conflict):
		// Before *validate.Error: a ConflictError wraps one.
		return http.StatusConflict, conflict.Error(), 0, false
	case errors.As(err, &verdict):
		return http.StatusBadRequest, verdict.Message, 0, false
	case errors.Is(err, oplog.ErrStorage):
		// Logged by the log at a bounded rate, not once per request.
		return http.StatusServiceUnavailable, "Database unavailable, retry later", retryStorage, false
	case errors.As(err, &behind):
		return http.StatusServiceUnavailable, "Server clock is behind the log, retry later", behind.RetryAfter(), false
	case errors.Is(err, oplog.ErrOverloaded):
		return http.StatusServiceUnavailable, "Too many operations queued, retry later", retryOverloaded, false
	case errors.Is(err, oplog.ErrClosed):
		return http.StatusServiceUnavailable, "Service Unavailable", retryClosed, false
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, "Service Unavailable", retryOverloaded, false
	case oplog.Unavailable(err):
		// A read while the database is down (which /_health reports).
		return http.StatusServiceUnavailable, "Database unavailable, retry later", retryStorage, false
	}
	return http.StatusInternalServerError, "Internal Server Error", 0, true
}

// fail answers c with err's mapping, logging the details of internal
// errors.
func (s *Server) fail(c *gin.Context, err error) {
	status, message, retry, internal := response(err)
	if internal {
		s.logger.LogAttrs(c.Request.Context(), slog.LevelError, "request failed",
			slog.String("method", c.Request.Method), slog.String("path", c.Request.URL.Path),
			slog.String("error", err.Error()))
	}
	if retry > 0 {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(retry.Seconds()))))
	}
	writeMessage(c, status, message)
}

// writeMessage answers {"message": msg} with status and stops the chain.
func writeMessage(c *gin.Context, status int, msg string) {
	b := append(make([]byte, 0, len(msg)+16), `{"message":`...)
	b = validate.AppendJSONString(b, strings.ToValidUTF8(msg, "\uFFFD"))
	b = append(b, '}')
	c.Data(status, contentJSON, b)
	c.Abort()
}

// handle adapts a handler that returns an error.
func (s *Server) handle(h func(c *gin.Context) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			s.fail(c, err)
		}
	}
}
