package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

// Handle lookup: GET /_lookup/handle/:handle.
//
// It answers the DIDs whose current document lists at://<handle> in
// alsoKnownAs, from the store's handle index (oplog.HandleIndex, the one
// the web UI's search reads). The index holds every DID that ever listed
// the handle; the answer keeps those whose current head (one Store.Heads
// query for all of them) still does, so a DID that changed its handle
// away, or was tombstoned, is not listed. alsoKnownAs is what a DID's
// controller asserts: the answer calls them claims, and says so.

// handleCatchUp: a lookup first brings the handle index up to the log
// when it is at most this many ops behind (the web UI's search does the
// same; the directory's own indexer does the rest). A variable for tests.
var handleCatchUp int64 = 20000

// claimsNote is the note every answer carries.
const claimsNote = "claims, not proofs: a DID's controller may list any handle in alsoKnownAs; " +
	"a handle is proven only by its DNS TXT record _atproto.<handle> or https://<handle>/.well-known/atproto-did, " +
	"which this directory does not check"

// handleClaims is the answer of GET /_lookup/handle/:handle.
type handleClaims struct {
	Handle string        `json:"handle"`
	Claims []handleClaim `json:"claims"`
	// Truncated: the index holds more candidates than one answer checks
	// (oplog.MaxHandleDIDs).
	Truncated bool `json:"truncated"`
	// IndexBehind is how many of the log's ops the handle index does not
	// cover yet (absent when it covers them all).
	IndexBehind int64  `json:"indexBehind,omitempty"`
	Note        string `json:"note"`
}

// handleClaim is one DID whose current document lists the handle.
type handleClaim struct {
	DID         string   `json:"did"`
	AlsoKnownAs []string `json:"alsoKnownAs"`
	// PDS is the endpoint of the atproto_pds service (absent without one).
	PDS       string `json:"pds,omitempty"`
	UpdatedAt string `json:"updatedAt"`
}

// GET /_lookup/handle/:handle
func (s *Server) lookupHandle(c *gin.Context) error {
	c.Header("Cache-Control", cacheControlNone)
	idx, ok := s.store.(oplog.HandleIndex)
	if !ok {
		return &httpError{http.StatusNotImplemented, "This directory keeps no handle index"}
	}
	raw := c.Param("handle")
	handle, err := oplog.NormalizeHandle(raw)
	if err != nil {
		return &httpError{http.StatusBadRequest, "Not a handle: " + clip(raw)}
	}
	ctx := c.Request.Context()
	behind, err := idx.HandlesBehind(ctx)
	if err != nil {
		return fmt.Errorf("read how far the handle index is behind: %w", err)
	}
	if behind > 0 && behind <= handleCatchUp {
		if _, err := oplog.CatchUpHandles(ctx, idx, 0, nil); err != nil {
			// The lookup goes on with the index as it is, and says so.
			s.logger.LogAttrs(ctx, slog.LevelWarn, "indexing handles before a lookup failed", slog.String("error", err.Error()))
		}
		if behind, err = idx.HandlesBehind(ctx); err != nil {
			return fmt.Errorf("read how far the handle index is behind: %w", err)
		}
	}
	cands, err := idx.DIDsForHandle(ctx, handle)
	if errors.Is(err, oplog.ErrBadHandle) {
		return &httpError{http.StatusBadRequest, "Not a handle: " + clip(raw)}
	}
	if err != nil {
		return fmt.Errorf("look up handle %s: %w", handle, err)
	}
	out := handleClaims{
		Handle:      handle,
		Claims:      []handleClaim{},
		Truncated:   len(cands) >= oplog.MaxHandleDIDs,
		IndexBehind: behind,
		Note:        claimsNote,
	}
	heads, err := s.store.Heads(ctx, cands)
	if err != nil {
		return fmt.Errorf("read the heads of handle %s's candidates: %w", handle, err)
	}
	for _, did := range cands {
		e, ok := heads[did]
		if !ok {
			continue
		}
		op, err := e.ParsedOp()
		if err != nil {
			return err
		}
		d, live := op.Data()
		if !live || !listsHandle(d.AlsoKnownAs, handle) {
			continue
		}
		claim := handleClaim{DID: did, AlsoKnownAs: d.AlsoKnownAs, UpdatedAt: string(validate.AppendTimestamp(nil, e.CreatedAt))}
		for _, sv := range d.Services {
			if sv.ID == "atproto_pds" {
				claim.PDS = sv.Endpoint
			}
		}
		out.Claims = append(out.Claims, claim)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return err
	}
	c.Header("Cache-Control", cacheControlRead)
	c.Data(http.StatusOK, contentJSON, bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	return nil
}

// listsHandle reports whether alsoKnownAs lists handle (normalised) as
// an at:// URI.
func listsHandle(alsoKnownAs []string, handle string) bool {
	for _, aka := range alsoKnownAs {
		if h, ok := oplog.HandleOf(aka); ok && h == handle {
			return true
		}
	}
	return false
}
