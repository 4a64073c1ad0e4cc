// Package testenv brings up real services for tests: a MariaDB database per
// test, the Temporal dev server, and whole Nimbus stacks (nimbus server and
// nimbus worker as separate processes) on free ports. `make test` starts
// MariaDB and Temporal (scripts/services.sh) and sets the NIMBUS_TEST_* env
// this package reads; without them tests fail and say how to run them.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/infra/db"
)

func need(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run the tests with `make test` (it starts MariaDB and Temporal via scripts/services.sh), or source .test-services/env", name)
	}
	return v
}

// TemporalAddress is the test Temporal dev server.
func TemporalAddress(t testing.TB) string { return need(t, "NIMBUS_TEST_TEMPORAL") }

// TemporalBin is the temporal CLI that scripts/services.sh installed.
func TemporalBin(t testing.TB) string { return need(t, "NIMBUS_TEMPORAL_BIN") }

// RandomName returns prefix + 12 random hex digits.
func RandomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// MySQLDSN creates an empty MariaDB database for this test, dropped when the
// test ends, and returns its nimbus DSN (mysql://...).
func MySQLDSN(t testing.TB) string {
	t.Helper()
	base := need(t, "NIMBUS_TEST_MYSQL_DSN") // user:pw@tcp(host:port)/
	name := RandomName("nimbus_t_")
	admin, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatalf("mysql: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if c, err := sql.Open("mysql", base); err == nil {
			_, _ = c.Exec("DROP DATABASE IF EXISTS " + name)
			c.Close()
		}
	})
	return "mysql://" + strings.TrimSuffix(base, "/") + "/" + name + "?parseTime=true"
}

// SQLiteDSN returns a DSN for a new SQLite file in the test's temp dir.
func SQLiteDSN(t testing.TB) string {
	return "sqlite://" + filepath.Join(t.TempDir(), "nimbus.db")
}

// Dialects returns a DSN per inventory dialect, for tests that must pass on
// both: "mariadb" and "sqlite".
func Dialects(t testing.TB) map[string]string {
	return map[string]string{"mariadb": MySQLDSN(t), "sqlite": SQLiteDSN(t)}
}

// OpenDB opens a DSN, closed when the test ends.
func OpenDB(t testing.TB, dsn string) *bun.DB {
	t.Helper()
	d, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// RepoRoot is the module root (where go.mod is).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
