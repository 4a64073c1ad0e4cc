package models

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"
)

// ConfigCacheTTL is how long ConfigValue keeps a value: a change made with
// updateConfiguration reaches every process within this time.
const ConfigCacheTTL = 10 * time.Second

type configKey struct {
	db   *bun.DB
	name string
}

type configEntry struct {
	value   string
	expires time.Time
}

var configCache sync.Map // configKey -> configEntry

// ConfigValue returns the value of a global setting, cached for
// ConfigCacheTTL per inventory. A setting with no row yet (an inventory
// seeded before it existed) has its default from DefaultConfigurations; an
// unknown name is ErrNotFound. db may be a transaction.
func ConfigValue(ctx context.Context, db bun.IDB, name string) (string, error) {
	key := configKey{db.NewSelect().DB(), name}
	if e, ok := configCache.Load(key); ok && time.Now().Before(e.(configEntry).expires) {
		return e.(configEntry).value, nil
	}
	var row Configuration
	err := db.NewSelect().Model(&row).Column("value").Where("name = ?", name).Limit(1).Scan(ctx)
	switch {
	case err == nil:
	case errors.Is(err, sql.ErrNoRows):
		d, ok := DefaultConfiguration(name)
		if !ok {
			return "", fmt.Errorf("configuration %s: %w", name, ErrNotFound)
		}
		row.Value = d.Value
	default:
		return "", err
	}
	configCache.Store(key, configEntry{value: row.Value, expires: time.Now().Add(ConfigCacheTTL)})
	return row.Value, nil
}

// ConfigInt returns a setting as an integer.
func ConfigInt(ctx context.Context, db bun.IDB, name string) (int64, error) {
	v, err := ConfigValue(ctx, db, name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("configuration %s: %q is not an integer", name, v)
	}
	return n, nil
}

// ConfigFloat returns a setting as a number.
func ConfigFloat(ctx context.Context, db bun.IDB, name string) (float64, error) {
	v, err := ConfigValue(ctx, db, name)
	if err != nil {
		return 0, err
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, fmt.Errorf("configuration %s: %q is not a number", name, v)
	}
	return f, nil
}

// ConfigBool returns a setting as a boolean.
func ConfigBool(ctx context.Context, db bun.IDB, name string) (bool, error) {
	v, err := ConfigValue(ctx, db, name)
	if err != nil {
		return false, err
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("configuration %s: %q is not true or false", name, v)
	}
	return b, nil
}

// InvalidateConfig drops this process's cached values of name (every name
// when name is empty), so that a change made here is seen here at once.
func InvalidateConfig(name string) {
	configCache.Range(func(k, _ any) bool {
		if name == "" || k.(configKey).name == name {
			configCache.Delete(k)
		}
		return true
	})
}

// DefaultConfiguration finds a setting among DefaultConfigurations.
func DefaultConfiguration(name string) (Configuration, bool) {
	for _, c := range DefaultConfigurations() {
		if c.Name == name {
			return c, true
		}
	}
	return Configuration{}, false
}

// Configuration value types as listConfigurations names them.
const (
	ConfigTypeBoolean = "Boolean"
	ConfigTypeNumber  = "Number"
	ConfigTypeDecimal = "Decimal"
	ConfigTypeString  = "String"
)

// ConfigType infers a setting's type from its default value.
func ConfigType(defaultValue string) string {
	v := strings.TrimSpace(defaultValue)
	switch {
	case v == "":
		return ConfigTypeString
	case strings.EqualFold(v, "true") || strings.EqualFold(v, "false"):
		return ConfigTypeBoolean
	}
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return ConfigTypeNumber
	}
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return ConfigTypeDecimal
	}
	return ConfigTypeString
}

// CheckConfigValue validates a new value of a setting against its type
// (taken from its default) and the setting's own rules; it returns the
// value as stored (booleans lower-cased, numbers trimmed).
func CheckConfigValue(c *Configuration, value string) (string, error) {
	v := strings.TrimSpace(value)
	switch ConfigType(c.DefaultValue) {
	case ConfigTypeBoolean:
		switch {
		case strings.EqualFold(v, "true"):
			return "true", nil
		case strings.EqualFold(v, "false"):
			return "false", nil
		}
		return "", fmt.Errorf("%s takes true or false, not %q", c.Name, value)
	case ConfigTypeNumber:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return "", fmt.Errorf("%s takes an integer, not %q", c.Name, value)
		}
		if strings.HasPrefix(c.Name, "max.") && n < Unlimited {
			return "", fmt.Errorf("%s takes -1 (unlimited) or a limit of at least 0, not %d", c.Name, n)
		}
		if n < 0 && !strings.HasPrefix(c.Name, "max.") {
			return "", fmt.Errorf("%s takes an integer of at least 0, not %d", c.Name, n)
		}
		return strconv.FormatInt(n, 10), nil
	case ConfigTypeDecimal:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return "", fmt.Errorf("%s takes a number, not %q", c.Name, value)
		}
		if f <= 0 && strings.Contains(c.Name, "overprovisioning") {
			return "", fmt.Errorf("%s takes a number greater than 0, not %q", c.Name, value)
		}
		if f < 0 {
			return "", fmt.Errorf("%s takes a number of at least 0, not %q", c.Name, value)
		}
		return v, nil
	}
	return value, nil
}
