package bundle

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/plcdir/plc/oplog"
	"github.com/plcdir/plc/oplog/storetest"
)

// Benchmarks of the plcbundle format: writing (ops/s, bytes per op),
// reading with every check (ops/s), and importing (ops/s, every op
// verified). Run: go test -run '^$' -bench Plcbundle -benchtime 3x ./bundle

func BenchmarkPlcbundleWrite(b *testing.B) {
	es := pbEntries(b, 2*PlcbundleOps)
	src := &pbTimeSource{es}
	var size int64
	for b.Loop() {
		dir := b.TempDir()
		if _, err := WritePlcbundles(context.Background(), src, dir, PlcbundleExportOptions{Origin: "https://plc.example", Before: pbT0.Add(time.Hour)}); err != nil {
			b.Fatal(err)
		}
		idx, _ := ReadPlcbundleIndex(dir)
		size = idx.TotalSizeBytes
	}
	b.ReportMetric(float64(len(es))*float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(size)/float64(len(es)), "bytes/op")
}

func pbBenchRepository(b *testing.B) string {
	b.Helper()
	dir := b.TempDir()
	if _, err := WritePlcbundles(context.Background(), &pbTimeSource{pbEntries(b, 2*PlcbundleOps)}, dir,
		PlcbundleExportOptions{Origin: "https://plc.example", Before: pbT0.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	return dir
}

func BenchmarkPlcbundleRead(b *testing.B) {
	dir := pbBenchRepository(b)
	for b.Loop() {
		r, err := OpenPlcbundle(dir)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := r.Next(context.Background()); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		r.Close()
	}
	b.ReportMetric(float64(2*PlcbundleOps)*float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkPlcbundleImport(b *testing.B) {
	lines, _, _ := pbVerdictLines(b, PlcbundleOps)
	dir := b.TempDir()
	writePbFixture(b, dir, lines, pbFixture{})
	var imported int64
	for b.Loop() {
		b.StopTimer()
		store, _ := storetest.SQLite(b)
		r, err := OpenPlcbundle(dir)
		if err != nil {
			b.Fatal(err)
		}
		l := oplog.NewLog(store, oplog.Options{NoRateLimit: true})
		b.StartTimer()
		_, st, err := ReplayForeign(context.Background(), l, r, oplog.ImportOptions{Source: r.Source()})
		if err != nil {
			b.Fatal(err)
		}
		imported += st.Imported
		b.StopTimer()
		l.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(imported)/b.Elapsed().Seconds(), "ops/s")
}
