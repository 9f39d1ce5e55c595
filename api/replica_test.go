package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
)

// GET /_health carries the read replicas plc serve --read-db reports, in
// the shape the spec gives them.
func TestHealthReportsReadReplicas(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	env := newAPIEnv(t, backends[0], envOptions{config: func(c *Config) {
		c.Health = func() map[string]any {
			return map[string]any{"replicas": []oplog.ReplicaHealth{
				{DB: "postgres://plc:xxxxx@replica1/plc", State: oplog.ReplicaUp, Seq: 0, CheckedAt: at},
				{DB: "postgres://replica2/plc", State: oplog.ReplicaDown, Error: "connection refused", CheckedAt: at},
			}}
		}
	}})
	env.get("/_health").expect(t, http.StatusOK, contentJSON, `{"version":"test-version","seq":0,"replicas":[`+
		`{"db":"postgres://plc:xxxxx@replica1/plc","state":"up","seq":0,"lagOps":0,"checkedAt":"2026-01-02T03:04:05Z"},`+
		`{"db":"postgres://replica2/plc","state":"down","seq":0,"lagOps":0,"error":"connection refused","checkedAt":"2026-01-02T03:04:05Z"}]}`)
}
