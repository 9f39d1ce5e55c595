package oplog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Webhooks: the callbacks registered for the new ops of one DID (plc
// watch add), kept in the database beside the log so that a delivery
// worker of any process resumes where the last one stopped. Both stores
// implement WebhookStore; WebhooksOf finds it behind a ReadRouter.

// Webhook is one registered callback.
type Webhook struct {
	ID  int64
	DID string
	URL string
	// Cursor is the last seq the delivery worker has handled for this
	// webhook: the ops of DID after it are still to be delivered.
	Cursor    int64
	CreatedAt time.Time
	// Failures counts the failed attempts at the first op after Cursor.
	Failures int
	// Disabled: the attempts ran out; nothing is delivered until the
	// webhook is enabled again. LastError says why the last attempt failed.
	Disabled  bool
	LastError string
}

// Errors of AddWebhook.
var (
	// ErrWebhookExists: the DID already has a webhook with this URL.
	ErrWebhookExists = errors.New("webhook already registered")
	// ErrWebhookLimit: the DID, or the directory, has as many webhooks as
	// it may.
	ErrWebhookLimit = errors.New("too many webhooks")
)

// WebhookStore keeps the registered webhooks and their delivery cursors.
type WebhookStore interface {
	// AddWebhook registers url for did's ops committed from now on (its
	// cursor is the latest seq), unless did has perDID webhooks already or
	// the store has total (ErrWebhookLimit), or did has url already
	// (ErrWebhookExists).
	AddWebhook(ctx context.Context, did, url string, perDID, total int, now time.Time) (Webhook, error)
	// Webhooks returns every webhook, by id.
	Webhooks(ctx context.Context) ([]Webhook, error)
	// RemoveWebhook deletes the webhook id; ErrNotFound if there is none.
	RemoveWebhook(ctx context.Context, id int64) error
	// EnableWebhook clears the failures and the disabled flag of webhook
	// id; ErrNotFound if there is none.
	EnableWebhook(ctx context.Context, id int64) error
	// SaveWebhook records the delivery state of webhook id (its cursor
	// never moves back); a webhook removed meanwhile is ErrNotFound.
	SaveWebhook(ctx context.Context, id, cursor int64, failures int, disabled bool, lastError string) error
	// LeaseWebhooks takes or renews, for holder, the lease on delivering
	// the webhooks until now+ttl, and reports whether holder has it: it
	// does unless another holder's lease has not expired at now.
	LeaseWebhooks(ctx context.Context, holder string, now time.Time, ttl time.Duration) (bool, error)
	// ReleaseWebhooks gives up holder's lease, if it has it.
	ReleaseWebhooks(ctx context.Context, holder string) error
}

// WebhooksOf returns the WebhookStore of store (the primary's, for a
// ReadRouter), or false when it keeps none.
func WebhooksOf(store Store) (WebhookStore, bool) {
	w, ok := store.(WebhookStore)
	return w, ok
}

// maxWebhookError bounds the stored last error.
const maxWebhookError = 500

func (r reads) AddWebhook(ctx context.Context, did, url string, perDID, total int, now time.Time) (Webhook, error) {
	var n int64
	if err := r.h.queryRow(ctx, `SELECT COUNT(*) FROM webhooks WHERE did = ? AND url = ?`, did, url).Scan(&n); err != nil {
		return Webhook{}, fmt.Errorf("read webhooks: %w", err)
	}
	if n > 0 {
		return Webhook{}, ErrWebhookExists
	}
	// The limits and the cursor are read by the insert itself.
	added, err := r.h.exec(ctx, `INSERT INTO webhooks (did, url, cursor, created_at)
		SELECT ?, ?, (SELECT COALESCE(MAX(seq), 0) FROM operations), ?
		WHERE (SELECT COUNT(*) FROM webhooks WHERE did = ?) < ? AND (SELECT COUNT(*) FROM webhooks) < ?`,
		did, url, now.UnixMilli(), did, perDID, total)
	if err != nil {
		return Webhook{}, fmt.Errorf("add webhook: %w", err)
	}
	if added == 0 {
		return Webhook{}, ErrWebhookLimit
	}
	hooks, err := r.webhooks(ctx, `WHERE did = ? AND url = ?`, did, url)
	if err != nil {
		return Webhook{}, err
	}
	if len(hooks) != 1 {
		return Webhook{}, fmt.Errorf("add webhook: %d rows after the insert", len(hooks))
	}
	return hooks[0], nil
}

func (r reads) Webhooks(ctx context.Context) ([]Webhook, error) {
	return r.webhooks(ctx, ``)
}

func (r reads) webhooks(ctx context.Context, where string, args ...any) ([]Webhook, error) {
	rows, err := r.h.query(ctx, `SELECT id, did, url, cursor, created_at, failures, disabled, last_error FROM webhooks `+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("read webhooks: %w", err)
	}
	defer rows.Close()
	var out []Webhook
	for rows.Next() {
		var (
			w        Webhook
			ms       int64
			disabled int64
		)
		if err := rows.Scan(&w.ID, &w.DID, &w.URL, &w.Cursor, &ms, &w.Failures, &disabled, &w.LastError); err != nil {
			return nil, fmt.Errorf("read webhooks: %w", err)
		}
		w.CreatedAt = time.UnixMilli(ms).UTC()
		w.Disabled = disabled != 0
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read webhooks: %w", err)
	}
	return out, nil
}

func (r reads) RemoveWebhook(ctx context.Context, id int64) error {
	n, err := r.h.exec(ctx, `DELETE FROM webhooks WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("remove webhook: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (r reads) EnableWebhook(ctx context.Context, id int64) error {
	n, err := r.h.exec(ctx, `UPDATE webhooks SET failures = 0, disabled = 0 WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("enable webhook: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (r reads) SaveWebhook(ctx context.Context, id, cursor int64, failures int, disabled bool, lastError string) error {
	if len(lastError) > maxWebhookError {
		lastError = strings.ToValidUTF8(lastError[:maxWebhookError], "")
	}
	d := 0
	if disabled {
		d = 1
	}
	n, err := r.h.exec(ctx, `UPDATE webhooks SET cursor = CASE WHEN cursor > ? THEN cursor ELSE ? END, failures = ?, disabled = ?, last_error = ? WHERE id = ?`,
		cursor, cursor, failures, d, lastError, id)
	if err != nil {
		return fmt.Errorf("save webhook: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

func (r reads) LeaseWebhooks(ctx context.Context, holder string, now time.Time, ttl time.Duration) (bool, error) {
	n, err := r.h.exec(ctx, `UPDATE webhook_lease SET holder = ?, expires_at = ? WHERE id = 1 AND (holder = ? OR expires_at < ?)`,
		holder, now.Add(ttl).UnixMilli(), holder, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("lease webhooks: %w", err)
	}
	return n == 1, nil
}

func (r reads) ReleaseWebhooks(ctx context.Context, holder string) error {
	if _, err := r.h.exec(ctx, `UPDATE webhook_lease SET expires_at = 0 WHERE id = 1 AND holder = ?`, holder); err != nil {
		return fmt.Errorf("release webhooks: %w", err)
	}
	return nil
}
