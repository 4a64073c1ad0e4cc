// Package db opens the inventory database (SQLite or MySQL/MariaDB) as a
// bun.DB from one DSN form.
package db

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/mysqldialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/driver/sqliteshim"

	"github.com/nimbus-cloud/nimbus/infra/config"
)

// Open connects to the DSN and checks that the database answers, failing
// with one line that says what and where.
func Open(ctx context.Context, dsn string) (*bun.DB, error) {
	var (
		sqldb *sql.DB
		db    *bun.DB
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite://"):
		path := strings.TrimPrefix(dsn, "sqlite://")
		if path == "" {
			return nil, fmt.Errorf("inventory DB %q: empty path", dsn)
		}
		if path != ":memory:" {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, fmt.Errorf("inventory DB %s: %w", dsn, err)
			}
		}
		// WAL lets readers run beside the writer; busy_timeout makes a second
		// writer wait instead of failing; immediate transactions take the
		// write lock up front so two read-then-write transactions never
		// deadlock on the upgrade.
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(15000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Set("_txlock", "immediate")
		q.Set("_time_format", "sqlite")
		var err error
		sqldb, err = sql.Open(sqliteshim.ShimName, "file:"+path+"?"+q.Encode())
		if err != nil {
			return nil, fmt.Errorf("inventory DB %s: %w", dsn, err)
		}
		sqldb.SetMaxOpenConns(8)
		// Keep them all idle: reopening a SQLite connection re-runs the
		// pragmas and costs more than the query.
		sqldb.SetMaxIdleConns(8)
		sqldb.SetConnMaxIdleTime(0)
		db = bun.NewDB(sqldb, sqlitedialect.New())
	case strings.HasPrefix(dsn, "mysql://"):
		cfg, err := mysql.ParseDSN(strings.TrimPrefix(dsn, "mysql://"))
		if err != nil {
			return nil, fmt.Errorf("inventory DB %s: bad MySQL DSN: %w", config.RedactDSN(dsn), err)
		}
		cfg.ParseTime = true
		if cfg.Loc == nil || cfg.Loc == time.Local {
			cfg.Loc = time.UTC
		}
		cfg.Timeout = 5 * time.Second
		if cfg.Params == nil {
			cfg.Params = map[string]string{}
		}
		// Strict mode turns silent truncation into errors.
		cfg.Params["sql_mode"] = "'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
		cfg.Params["time_zone"] = "'+00:00'"
		conn, err := mysql.NewConnector(cfg)
		if err != nil {
			return nil, fmt.Errorf("inventory DB %s: %w", config.RedactDSN(dsn), err)
		}
		sqldb = sql.OpenDB(conn)
		sqldb.SetMaxOpenConns(64)
		sqldb.SetMaxIdleConns(32)
		sqldb.SetConnMaxLifetime(30 * time.Minute)
		// Ping before bun sees the DB: its MySQL dialect probes the server
		// version at once and logs a warning when it cannot.
		if err := ping(ctx, sqldb); err != nil {
			sqldb.Close()
			return nil, fmt.Errorf("inventory DB %s unreachable: %s", config.RedactDSN(dsn), firstLine(err.Error()))
		}
		db = bun.NewDB(sqldb, mysqldialect.New())
	default:
		return nil, fmt.Errorf("inventory DB %q: want sqlite://PATH or mysql://user:pw@tcp(host:port)/db", config.RedactDSN(dsn))
	}
	if err := ping(ctx, sqldb); err != nil {
		db.Close()
		return nil, fmt.Errorf("inventory DB %s unreachable: %s", config.RedactDSN(dsn), firstLine(err.Error()))
	}
	return db, nil
}

func ping(ctx context.Context, sqldb *sql.DB) error {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return sqldb.PingContext(pctx)
}

// IsSQLite tells whether db speaks the SQLite dialect.
func IsSQLite(db bun.IDB) bool { return db.Dialect().Name().String() == "sqlite" }

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
