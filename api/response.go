package api

import (
	"encoding/json"
	"time"
)

// List is a list response: {"count": N, "<key>": [...]}, or {} when empty,
// as CloudStack answers.
type List struct {
	Key   string
	Count int
	Items any // a slice
}

// MarshalJSON writes CloudStack's list shape.
func (l List) MarshalJSON() ([]byte, error) {
	if l.Count == 0 {
		return []byte("{}"), nil
	}
	items, err := json.Marshal(l.Items)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]json.RawMessage{
		"count": json.RawMessage(itoa(l.Count)),
		l.Key:   items,
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// AsyncResponse answers an async command at once.
type AsyncResponse struct {
	ID    string `json:"id,omitempty"`
	JobID string `json:"jobid"`
	// JobUI links the job's page in the Temporal Web UI, when configured.
	JobUI string `json:"jobui,omitempty"`
}

// Success answers commands that return only success.
type Success struct {
	Success     bool   `json:"success"`
	DisplayText string `json:"displaytext,omitempty"`
}

// Object answers a command whose response is one entity under a key, as
// create and update commands do ({"zone": {...}}).
type Object map[string]any

// FormatTime is CloudStack's timestamp form: 2006-01-02T15:04:05+0000.
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05-0700")
}
