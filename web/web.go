package web

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/bluesky-social/indigo/atproto/syntax"

	"github.com/plcdir/plc"
	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/validate"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static/style.css
var styleCSS []byte

// Headers of every response.
const (
	// CSP allows nothing but the page's own stylesheet and same-origin
	// form submissions: no script at all, no inline style, no framing.
	CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

	contentHTML = "text/html; charset=utf-8"
	contentCSS  = "text/css; charset=utf-8"

	// pageTimeout bounds the database reads of one page.
	pageTimeout = 10 * time.Second
	// statusTTL is how long the status page's numbers are reused: the
	// page is public, and its counts are the only reads not bounded by
	// one DID.
	statusTTL = 5 * time.Second
	// maxDrawn is how many of a DID's ops (the latest) the DID page
	// shows; the raw audit log has them all.
	maxDrawn = 250
	// divergencesPerPage is the length of a page of divergence records;
	// evidenceShown is how much of each record's evidence it shows.
	divergencesPerPage = 50
	evidenceShown      = 2048
)

// Checkpoints is what the status page needs of the transparency log
// (*tlog.TLog).
type Checkpoints interface {
	// Latest returns the latest signed checkpoint (oplog.ErrNotFound
	// before the first).
	Latest(ctx context.Context) (oplog.Checkpoint, error)
}

// Mirror is what the pages need of the mirror this directory runs (cmd/plc
// adapts *mirror.Mirror).
type Mirror struct {
	// Status returns the mirror's state, as GET /_health reports it.
	Status func(ctx context.Context) MirrorStatus
	// Source names the mirror's divergence records among the store's
	// rejections (the records GET /_mirror/divergences lists).
	Source string
}

// MirrorStatus is mirror.Status.
type MirrorStatus struct {
	Upstream, Mode, State string
	Cursor                int64
	LagSeconds            float64
	// LagOps is -1 when not known.
	LagOps int64
}

// Config configures the UI. Store is required.
type Config struct {
	// Store is the directory's log: every page reads it.
	Store oplog.Store
	// Handles, if set, looks handles up for the search box. Nil: Store's,
	// if it has one (both oplog stores do); else the search takes DIDs
	// only.
	Handles oplog.HandleIndex
	// HandleCatchUp: a search first brings the handle index up to the log
	// when it is at most this many ops behind (default 20,000; negative:
	// never).
	HandleCatchUp int64
	// Stats counts recent ops and divergences for the status page. Nil:
	// Store's, if it has them (both oplog stores do); else the counts are
	// not shown.
	Stats oplog.Stats
	// Checkpoints, if set, gives the status page the latest signed
	// checkpoint.
	Checkpoints Checkpoints
	// Mirror, if set, adds the upstream's state to the status page and
	// serves the divergences page.
	Mirror *Mirror
	// Version is shown in the footer.
	Version string
	// Now is the clock of "the last hour and day" (default time.Now).
	Now func() time.Time
	// Logger receives internal errors (default: discard).
	Logger *slog.Logger
}

// UI serves the pages. It implements http.Handler for GET / and GET /ui/….
type UI struct {
	cfg    Config
	mux    *http.ServeMux
	pages  map[string]*template.Template
	cssTag string // the stylesheet's version, for its URL

	mu         sync.Mutex
	status     *statusView
	statusTime time.Time
}

// New builds the UI. It panics if cfg.Store is nil or a template does not
// parse (both are programming errors).
func New(cfg Config) *UI {
	if cfg.Store == nil {
		panic("web.New: Config.Store is nil")
	}
	if cfg.Stats == nil {
		cfg.Stats, _ = cfg.Store.(oplog.Stats)
	}
	if cfg.Handles == nil {
		cfg.Handles, _ = cfg.Store.(oplog.HandleIndex)
	}
	cfg.HandleCatchUp = cmp.Or(cfg.HandleCatchUp, 20000)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	sum := sha256.Sum256(styleCSS)
	u := &UI{cfg: cfg, pages: parsePages(), cssTag: hex.EncodeToString(sum[:6])}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", u.home)
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/search", u.search)
	mux.HandleFunc("GET /ui/divergences", u.divergences)
	mux.HandleFunc("GET /ui/static/style.css", u.style)
	mux.HandleFunc("GET /ui/{did}", u.did)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			u.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed", "The pages of this directory are read with GET.")
			return
		}
		u.errorPage(w, r, http.StatusNotFound, "Page not found", "There is no page at this address.")
	})
	u.mux = mux
	return u
}

func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{
		"stamp":    stamp,
		"iso":      func(t time.Time) string { return string(validate.AppendTimestamp(nil, t)) },
		"span":     span,
		"shortKey": shortKey,
		"int64":    func(n int) int64 { return int64(n) },
		"plural": func(n int64, one, many string) string {
			if n == 1 {
				return one
			}
			return many
		},
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html"))
	pages := map[string]*template.Template{}
	for _, name := range []string{"home", "did", "divergences", "error", "handle"} {
		t := template.Must(base.Clone())
		pages[name] = template.Must(t.ParseFS(templateFS, "templates/"+name+".html"))
	}
	return pages
}

// ServeHTTP sets the security headers every page carries and routes.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	u.mux.ServeHTTP(w, r)
}

// page is what the layout needs; Body is the page's own data.
type page struct {
	Title string
	// HeroSearch puts the search form in the page (the home page) rather
	// than in the header.
	HeroSearch bool
	Query      string
	// Handles says the search box takes handles too.
	Handles bool
	CSS     string
	Mirror  bool
	Version string
	Body    any
}

// render executes a page template into a buffer first, so a failure
// becomes a clean error page rather than half a page.
func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.CSS = "/ui/static/style.css?v=" + u.cssTag
	p.Mirror = u.cfg.Mirror != nil
	p.Handles = u.cfg.Handles != nil
	p.Version = u.cfg.Version
	var b bytes.Buffer
	if err := u.pages[name].ExecuteTemplate(&b, "layout.html", p); err != nil {
		u.cfg.Logger.Error("web: rendering a page failed", "page", name, "path", r.URL.Path, "err", err)
		if name != "error" {
			u.errorPage(w, r, http.StatusInternalServerError, "Internal error", "This page could not be shown; the error is logged.")
		} else {
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
		}
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentHTML)
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

type errorView struct {
	Status  int
	Heading string
	Message string
	// Hint, if set, explains what to search for instead.
	Hint bool
}

func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, status int, heading, msg string) {
	u.errorPageQ(w, r, status, heading, msg, "", false)
}

func (u *UI) errorPageQ(w http.ResponseWriter, r *http.Request, status int, heading, msg, query string, hint bool) {
	u.render(w, r, status, "error", page{
		Title: heading, Query: query,
		Body: errorView{Status: status, Heading: heading, Message: msg, Hint: hint},
	})
}

// failed answers a failure of ours: 503 when the database did not answer
// in time, else 500; the details go to the log only.
func (u *UI) failed(w http.ResponseWriter, r *http.Request, err error) {
	u.cfg.Logger.Error("web: page failed", "path", r.URL.Path, "err", err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, oplog.ErrClosed) {
		w.Header().Set("Retry-After", "5")
		u.errorPage(w, r, http.StatusServiceUnavailable, "Service unavailable", "The directory's database did not answer; try again in a moment.")
		return
	}
	u.errorPage(w, r, http.StatusInternalServerError, "Internal error", "This page could not be shown; the error is logged.")
}

func (u *UI) style(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", contentCSS)
	h.Set("Cache-Control", "public, max-age=86400")
	h.Set("ETag", `"`+u.cssTag+`"`)
	if r.Header.Get("If-None-Match") == `"`+u.cssTag+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(styleCSS)))
	w.Write(styleCSS)
}

// Search.

// queryKind is what a search is for.
type queryKind int

const (
	queryBad queryKind = iota
	queryDID
	queryHandle
)

// parseQuery reads what a person typed into the search box: a DID (with
// surrounding space, an at:// or did: URL form, or upper-case letters) or
// a handle (the atproto syntax; also as at://handle or @handle, in any
// case). value is the DID, or the handle lower-cased; anything else is
// queryBad.
func parseQuery(q string) (kind queryKind, value string) {
	s := strings.TrimSpace(q)
	s = strings.TrimPrefix(s, "at://")
	s = strings.TrimRight(s, "/")
	lower := strings.ToLower(s)
	if strings.HasPrefix(lower, "did:plc:") {
		if validate.ValidDID(lower) {
			return queryDID, lower
		}
		return queryBad, ""
	}
	if strings.HasPrefix(lower, "did:") {
		return queryBad, ""
	}
	h, err := syntax.ParseHandle(strings.TrimPrefix(s, "@"))
	if err != nil {
		return queryBad, ""
	}
	return queryHandle, string(h.Normalize())
}

// resolveHelp says how to find a handle's DID without this directory.
const resolveHelp = "Resolve the handle to its DID first (the _atproto DNS TXT record of the handle, or https://<handle>/.well-known/atproto-did), then search for the DID."

func (u *UI) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	if strings.TrimSpace(q) == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	switch kind, v := parseQuery(q); {
	case kind == queryDID:
		http.Redirect(w, r, "/ui/"+v, http.StatusSeeOther)
	case kind == queryHandle && u.cfg.Handles == nil:
		u.errorPageQ(w, r, http.StatusBadRequest, "Handles are not indexed",
			"This directory looks DIDs up, not handles: it keeps no index of alsoKnownAs. "+resolveHelp, q, true)
	case kind == queryHandle:
		u.searchHandle(w, r, q, v)
	default:
		u.errorPageQ(w, r, http.StatusBadRequest, "Not a did:plc or a handle",
			"Search for a DID of the form did:plc: followed by 24 characters (a–z, 2–7), or for a handle such as alice.example.com.", q, true)
	}
}

// handleView is the page of a handle several DIDs claim.
type handleView struct {
	Handle string
	DIDs   []handleClaim
	// More is set when the index holds more candidates than were checked.
	More bool
}

type handleClaim struct {
	DID      string
	LastOpAt time.Time
}

// searchHandle looks handle (normalised) up in the index and keeps the
// DIDs whose current document lists it: one is shown, several listed,
// none a 404.
func (u *UI) searchHandle(w http.ResponseWriter, r *http.Request, q, handle string) {
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	// The index follows the log behind it: bring it up to date first when
	// that is a few batches' work (the directory's own indexer does the
	// rest, such as a whole upgraded database).
	if behind, err := u.cfg.Handles.HandlesBehind(ctx); err == nil && behind > 0 && behind <= u.cfg.HandleCatchUp {
		if _, err := oplog.CatchUpHandles(ctx, u.cfg.Handles, 0, nil); err != nil {
			u.cfg.Logger.Warn("indexing handles before a search failed", "err", err)
		}
	}
	cands, err := u.cfg.Handles.DIDsForHandle(ctx, handle)
	if errors.Is(err, oplog.ErrBadHandle) {
		u.errorPageQ(w, r, http.StatusBadRequest, "Not a did:plc or a handle", "This is not a handle.", q, true)
		return
	}
	if err != nil {
		u.failed(w, r, fmt.Errorf("look up handle %s: %w", handle, err))
		return
	}
	v := handleView{Handle: handle, More: len(cands) >= oplog.MaxHandleDIDs}
	for _, did := range cands {
		e, err := u.cfg.Store.Head(ctx, did)
		if errors.Is(err, oplog.ErrNotFound) {
			continue
		}
		if err != nil {
			u.failed(w, r, fmt.Errorf("read the head of %s: %w", did, err))
			return
		}
		ok, err := claims(&e, handle)
		if err != nil {
			u.failed(w, r, err)
			return
		}
		if ok {
			v.DIDs = append(v.DIDs, handleClaim{DID: did, LastOpAt: e.CreatedAt})
		}
	}
	switch {
	case len(v.DIDs) == 1 && !v.More:
		http.Redirect(w, r, "/ui/"+v.DIDs[0].DID, http.StatusSeeOther)
	case len(v.DIDs) == 0:
		msg := "No DID in this directory lists at://" + handle + " in its current document's alsoKnownAs."
		if behind, err := u.cfg.Handles.HandlesBehind(ctx); err == nil && behind > 0 {
			msg += fmt.Sprintf(" The handle index does not cover all of this directory's ops yet (%d to go): try again later.", behind)
		}
		u.errorPageQ(w, r, http.StatusNotFound, "Handle not known here", msg+" "+resolveHelp, q, true)
	default:
		u.render(w, r, http.StatusOK, "handle", page{Title: "Handle " + handle, Query: q, Body: v})
	}
}

// claims reports whether e, a DID's head, lists handle (normalised) in
// its alsoKnownAs: a tombstone lists none.
func claims(e *oplog.Entry, handle string) (bool, error) {
	op, err := e.ParsedOp()
	if err != nil {
		return false, err
	}
	d, ok := op.Data()
	if !ok {
		return false, nil
	}
	for _, aka := range d.AlsoKnownAs {
		if h, ok := oplog.HandleOf(aka); ok && h == handle {
			return true, nil
		}
	}
	return false, nil
}

// The status page.

type statusView struct {
	LatestSeq  int64
	LastOpAt   time.Time
	HasCounts  bool
	OpsHour    int64
	OpsDay     int64
	Checkpoint *checkpointView
	// CheckpointNote says why there is no checkpoint to show.
	CheckpointNote string
	Mirror         *mirrorView
	At             time.Time
}

type checkpointView struct {
	Origin   string
	Size     int64
	Root     string
	SignedAt time.Time
	Note     string
}

type mirrorView struct {
	Upstream    string
	Mode        string
	State       string
	Cursor      int64
	LagSeconds  float64
	LagOps      int64
	Divergences int64
	// HasCount is false when the count could not be read.
	HasCount bool
}

// LagText renders the lag.
func (m *mirrorView) LagText() string {
	var parts []string
	if m.LagOps >= 0 {
		unit := "ops"
		if m.LagOps == 1 {
			unit = "op"
		}
		parts = append(parts, fmt.Sprintf("%d %s behind the latest upstream seq seen", m.LagOps, unit))
	}
	if m.LagSeconds > 0 {
		parts = append(parts, "latest op "+span(time.Duration(m.LagSeconds*float64(time.Second)))+" old (backfilling)")
	}
	if len(parts) == 0 {
		if m.State == "stream" || m.State == "poll" {
			return "caught up (following the live stream)"
		}
		return "not known yet"
	}
	return strings.Join(parts, "; ")
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	st, err := u.statusNow(r.Context())
	if err != nil {
		u.failed(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "home", page{Title: "Directory status", HeroSearch: true, Body: st})
}

// statusNow returns the status, read at most once per statusTTL.
func (u *UI) statusNow(ctx context.Context) (*statusView, error) {
	now := u.cfg.Now()
	u.mu.Lock()
	if u.status != nil && now.Sub(u.statusTime) < statusTTL && !now.Before(u.statusTime) {
		st := u.status
		u.mu.Unlock()
		return st, nil
	}
	u.mu.Unlock()
	st, err := u.readStatus(ctx, now)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.status, u.statusTime = st, now
	u.mu.Unlock()
	return st, nil
}

func (u *UI) readStatus(ctx context.Context, now time.Time) (*statusView, error) {
	ctx, cancel := context.WithTimeout(ctx, pageTimeout)
	defer cancel()
	s := u.cfg.Store
	st := &statusView{At: now.UTC()}
	var err error
	if st.LatestSeq, err = s.LatestSeq(ctx); err != nil {
		return nil, fmt.Errorf("latest seq: %w", err)
	}
	if st.LatestSeq > 0 {
		if e, err := s.Op(ctx, st.LatestSeq); err == nil {
			st.LastOpAt = e.CreatedAt
		}
	}
	if stats := u.cfg.Stats; stats != nil {
		h, herr := stats.CountOpsAfter(ctx, now.Add(-time.Hour))
		d, derr := stats.CountOpsAfter(ctx, now.Add(-24*time.Hour))
		if herr == nil && derr == nil {
			st.HasCounts, st.OpsHour, st.OpsDay = true, h, d
		} else {
			u.cfg.Logger.Warn("web: counting recent ops failed", "err", errors.Join(herr, derr))
		}
	}
	if u.cfg.Checkpoints == nil {
		st.CheckpointNote = "This directory keeps no transparency log."
	} else {
		cp, err := u.cfg.Checkpoints.Latest(ctx)
		switch {
		case errors.Is(err, oplog.ErrNotFound):
			st.CheckpointNote = "No checkpoint has been signed yet."
		case err != nil:
			u.cfg.Logger.Warn("web: reading the latest checkpoint failed", "err", err)
			st.CheckpointNote = "The latest checkpoint could not be read."
		default:
			cv := &checkpointView{Size: cp.Size, Root: base64.StdEncoding.EncodeToString(cp.Root[:]), SignedAt: cp.SignedAt, Note: string(cp.Note)}
			text, _, _ := strings.Cut(cv.Note, "\n\n")
			if body, err := plc.ParseCheckpointBody(text + "\n"); err == nil {
				cv.Origin = body.Origin
			}
			st.Checkpoint = cv
		}
	}
	if m := u.cfg.Mirror; m != nil {
		ms := m.Status(ctx)
		mv := &mirrorView{Upstream: ms.Upstream, Mode: ms.Mode, State: ms.State, Cursor: ms.Cursor, LagSeconds: ms.LagSeconds, LagOps: ms.LagOps}
		if u.cfg.Stats != nil {
			if n, err := u.cfg.Stats.CountRejections(ctx, m.Source); err == nil {
				mv.Divergences, mv.HasCount = n, true
			} else {
				u.cfg.Logger.Warn("web: counting divergences failed", "err", err)
			}
		}
		st.Mirror = mv
	}
	return st, nil
}

// The divergences page.

type divergencesView struct {
	Upstream string
	Records  []divergenceView
	After    int64
	// Next is the after= of the next page (0: this is the last).
	Next  int64
	Total int64
	// HasTotal is false when the count could not be read.
	HasTotal bool
}

type divergenceView struct {
	ID        int64
	CreatedAt time.Time
	DID, CID  string
	// DIDLink is set when DID is a did:plc (a page of its own).
	DIDLink   bool
	Line      int64
	Reason    string
	Evidence  string
	Cut       int // bytes of evidence not shown
	Encoding  string
	RawLength int
}

func (u *UI) divergences(w http.ResponseWriter, r *http.Request) {
	m := u.cfg.Mirror
	if m == nil {
		u.errorPage(w, r, http.StatusNotFound, "Not a mirror", "This directory mirrors no upstream, so it keeps no divergence records.")
		return
	}
	var after int64
	if v := r.URL.Query().Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			u.errorPage(w, r, http.StatusBadRequest, "Bad request", "after must be a record id (a whole number, 0 or more).")
			return
		}
		after = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	v := divergencesView{Upstream: m.Status(ctx).Upstream, After: after}
	// The records are read a few at a time, and only the part of each
	// evidence that is shown is kept: a page holds divergencesPerPage
	// records of up to 1 MiB of evidence each.
	for cursor := after; len(v.Records) <= divergencesPerPage; {
		rs, err := u.cfg.Store.Rejections(ctx, m.Source, cursor, divergencesReadChunk)
		if err != nil {
			u.failed(w, r, err)
			return
		}
		for _, rj := range rs {
			if len(v.Records) == divergencesPerPage {
				v.Next = cursor // there is one more
				break
			}
			v.Records = append(v.Records, newDivergenceView(rj))
			cursor = rj.ID
		}
		if v.Next != 0 || len(rs) < divergencesReadChunk {
			break
		}
	}
	if u.cfg.Stats != nil {
		if n, err := u.cfg.Stats.CountRejections(ctx, m.Source); err == nil {
			v.Total, v.HasTotal = n, true
		}
	}
	u.render(w, r, http.StatusOK, "divergences", page{Title: "Divergences", Body: v})
}

// divergencesReadChunk is the number of records the divergences page
// reads from the store at a time.
const divergencesReadChunk = 8

func newDivergenceView(rj oplog.Rejection) divergenceView {
	d := divergenceView{ID: rj.ID, CreatedAt: rj.CreatedAt, DID: reveal(rj.DID), CID: reveal(rj.CID), DIDLink: validate.ValidDID(rj.DID),
		Line: rj.Line, Reason: reveal(rj.Reason), RawLength: len(rj.Raw)}
	raw := rj.Raw
	if len(raw) > evidenceShown {
		raw, d.Cut = raw[:evidenceShown], len(raw)-evidenceShown
	}
	if isText(raw) {
		d.Evidence = reveal(strings.ToValidUTF8(string(raw), "\uFFFD"))
	} else {
		d.Evidence, d.Encoding = base64.StdEncoding.EncodeToString(raw), "base64"
	}
	return d
}

// isText reports whether b is UTF-8 text, perhaps cut inside its last
// character.
func isText(b []byte) bool {
	for i := 0; i < utf8.UTFMax-1 && len(b) > 0 && !utf8.Valid(b); i++ {
		b = b[:len(b)-1]
	}
	return utf8.Valid(b)
}

// The DID page.

type didView struct {
	DID        string
	Tombstoned bool
	// Data is the current document's data (none when tombstoned); Handles
	// its alsoKnownAs.
	Data     *dataView
	Ops      []opView
	Graph    graph
	Count    int
	NullN    int
	Forks    int
	Omitted  int // older ops not shown
	LastOpAt time.Time
}

type dataView struct {
	Handles             []string
	Services            []serviceView
	VerificationMethods []validate.VerificationMethod
	RotationKeys        []string
}

type serviceView struct {
	ID, Type, Endpoint string
	// URL is Endpoint when it is an http(s) URL, the only kind linked.
	URL string
}

// linkable returns s if it is an absolute http or https URL with a host,
// else "".
func linkable(s string) string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return ""
	}
	return u.String()
}

func (u *UI) did(w http.ResponseWriter, r *http.Request) {
	did := r.PathValue("did")
	if !validate.ValidDID(did) {
		if lower := strings.ToLower(did); lower != did && validate.ValidDID(lower) {
			http.Redirect(w, r, "/ui/"+lower, http.StatusMovedPermanently)
			return
		}
		u.errorPageQ(w, r, http.StatusNotFound, "Not a did:plc",
			"A did:plc is did:plc: followed by 24 characters (a–z, 2–7).", did, true)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pageTimeout)
	defer cancel()
	entries, err := u.cfg.Store.Ops(ctx, did)
	if err != nil {
		u.failed(w, r, fmt.Errorf("read ops of %s: %w", did, err))
		return
	}
	if len(entries) == 0 {
		u.errorPageQ(w, r, http.StatusNotFound, "DID not registered",
			"This directory holds no operation of "+did+".", did, false)
		return
	}
	// The signers of the current chain are recorded; only the others
	// (nullified ops) have their signatures checked again.
	signers := map[int64]int{}
	if rec, err := u.cfg.Store.Record(ctx, did); err == nil {
		for i, seq := range rec.Seqs {
			if i < len(rec.State.Ops) {
				signers[seq] = rec.State.Ops[i].Signer
			}
		}
	} else if !errors.Is(err, oplog.ErrNotFound) {
		u.failed(w, r, fmt.Errorf("read record of %s: %w", did, err))
		return
	}
	omitted := max(0, len(entries)-maxDrawn)
	// Forks are found over the whole history, then the latest ops drawn.
	ops, err := history(entries, signers)
	if err != nil {
		u.failed(w, r, err)
		return
	}
	v := didView{DID: did, Count: len(ops), Omitted: omitted, LastOpAt: ops[len(ops)-1].CreatedAt}
	for i := range ops {
		if ops[i].Nullified {
			v.NullN++
		}
		if ops[i].Recovery != nil {
			v.Forks++
		}
	}
	// The current state: the latest op that is not nullified.
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Nullified {
			continue
		}
		op, err := entries[i].ParsedOp()
		if err != nil {
			u.failed(w, r, err)
			return
		}
		d, ok := op.Data()
		if !ok {
			v.Tombstoned = true
			break
		}
		dv := &dataView{Handles: revealAll(d.AlsoKnownAs), RotationKeys: d.RotationKeys}
		for _, m := range d.VerificationMethods {
			dv.VerificationMethods = append(dv.VerificationMethods, validate.VerificationMethod{ID: reveal(m.ID), Key: reveal(m.Key)})
		}
		for _, s := range d.Services {
			sv := serviceView{ID: reveal(s.ID), Type: reveal(s.Type), Endpoint: reveal(s.Endpoint)}
			if sv.Endpoint == s.Endpoint {
				sv.URL = linkable(s.Endpoint)
			}
			dv.Services = append(dv.Services, sv)
		}
		v.Data = dv
		break
	}
	v.Ops = ops[omitted:]
	v.Graph = layout(v.Ops)
	title := did
	if v.Data != nil && len(v.Data.Handles) > 0 {
		title = clipN(v.Data.Handles[0], 64) + " · " + did
	}
	u.render(w, r, http.StatusOK, "did", page{Title: title, Query: did, Body: v})
}
