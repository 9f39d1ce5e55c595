package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/plcdir/plc/internal/optest"
	"github.com/plcdir/plc/internal/pgtest"
)

// TestServeReadReplicaReadYourWritesAcrossProcesses runs two plc serve
// processes on one primary, one of them with --read-db on a real streaming
// replica. With the replica's replay paused, an op that the other process
// answered 200 is what the first one resolves (from the primary); once
// replayed, the replica answers. /_health shows the replica without its
// password.
func TestServeReadReplicaReadYourWritesAcrossProcesses(t *testing.T) {
	db := pgtest.URL(t)
	rdb := pgtest.ReplicaURL(t, db)
	const secret = "s3cret-replica"
	u, err := url.Parse(rdb)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("password", secret) // the test cluster trusts local connections: ignored
	u.RawQuery = q.Encode()

	writer := startServer(t, db)
	// Without the cache of rendered answers: the test counts which
	// database answers each read, and a cached answer reads neither.
	reader := startServer(t, db, "--read-db", u.String(), "--read-db-check", "10ms", "--metrics-listen", "127.0.0.1:0", "--read-cache-bytes", "0")

	// The replica comes into rotation once it has replayed the schema.
	var health struct {
		Replicas []struct {
			DB    string `json:"db"`
			State string `json:"state"`
		} `json:"replicas"`
	}
	pollUntil(t, "the replica in rotation", func() bool {
		code, body := getBody(t, reader.url+"/_health")
		if bytes.Contains(body, []byte(secret)) {
			t.Fatalf("/_health shows the replica's password: %s", body)
		}
		if code != 200 || json.Unmarshal(body, &health) != nil || len(health.Replicas) != 1 {
			t.Fatalf("/_health: %d %s", code, body)
		}
		return health.Replicas[0].State == "up"
	})

	id := optest.NewIdentity(t, "replica.test", 1)
	if code, body, err := post(reader.url, id.Head, id.DID); err != nil || code != 200 {
		t.Fatalf("genesis: %d %s %v", code, body, err)
	}
	if code, body := getBody(t, reader.url+"/"+id.DID+"/log/audit"); code != 200 || !bytes.Contains(body, []byte(id.Head.CID())) {
		t.Fatalf("read after own write: %d %s", code, body)
	}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if _, err := conn.Exec(ctx, `SELECT pg_wal_replay_resume()`); err != nil {
				t.Errorf("resume replay: %v", err)
			}
		}
	}
	defer resume()

	up := id.Update(t, nil, 0, "moved.test")
	if code, body, err := post(writer.url, up, id.DID); err != nil || code != 200 {
		t.Fatalf("update on the other process: %d %s %v", code, body, err)
	}
	behind := metricOf(t, reader.metricsURL, `plc_replica_fallbacks_total{reason="behind"}`)
	if code, body := getBody(t, reader.url+"/"+id.DID+"/log/audit"); code != 200 || !bytes.Contains(body, []byte(up.CID())) {
		t.Fatalf("read of another process's write with the replica paused: %d %s", code, body)
	}
	if metricOf(t, reader.metricsURL, `plc_replica_fallbacks_total{reason="behind"}`) <= behind {
		t.Fatal("the read was not counted as answered by the primary")
	}

	resume()
	reads := metricOf(t, reader.metricsURL, `plc_replica_reads_total{replica="0"}`)
	pollUntil(t, "a read answered by the replica", func() bool {
		code, body := getBody(t, reader.url+"/"+id.DID+"/log/audit")
		if code != 200 || !bytes.Contains(body, []byte(up.CID())) {
			t.Fatalf("read after replay: %d %s", code, body)
		}
		return metricOf(t, reader.metricsURL, `plc_replica_reads_total{replica="0"}`) > reads
	})
}

// pollUntil calls cond until it holds, failing after a minute.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after a minute", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metricOf returns the value of the sample named name (with its labels,
// as the text format writes them), 0 when absent.
func metricOf(t *testing.T, metricsURL, name string) float64 {
	t.Helper()
	_, body := getBody(t, metricsURL+"/metrics")
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return 0
}
