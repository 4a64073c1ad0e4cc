// Package temporal wires Nimbus to Temporal: client options, the task queue,
// workflow-ID rules and the search attributes every job carries.
package temporal

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
)

// DefaultTaskQueue is the one queue Nimbus workers poll. Tests give each
// stack its own queue (config TaskQueue) so that stacks sharing one Temporal
// never run each other's work.
const DefaultTaskQueue = "nimbus"

// Search attributes on every job workflow, so operators filter jobs in the
// Temporal UI (e.g. NimbusCommand = "deployVirtualMachine").
var (
	SACommand      = temporal.NewSearchAttributeKeyKeyword("NimbusCommand")
	SAAccount      = temporal.NewSearchAttributeKeyKeyword("NimbusAccount")
	SADomain       = temporal.NewSearchAttributeKeyKeyword("NimbusDomain")
	SAResourceType = temporal.NewSearchAttributeKeyKeyword("NimbusResourceType")
	SAResourceID   = temporal.NewSearchAttributeKeyKeyword("NimbusResourceId")
)

var searchAttributes = []temporal.SearchAttributeKeyKeyword{SACommand, SAAccount, SADomain, SAResourceType, SAResourceID}

// Workflow-ID rules. A job's workflow ID is its CloudStack job id: a bare
// UUID, which is what clients expect in `jobid`. Internal workflows (health
// pings, schedules, per-resource helpers) are "nimbus-<kind>-<key>" and never
// look like a UUID, so the two spaces cannot collide.
var jobIDRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IsJobID tells whether a workflow ID is a CloudStack job id.
func IsJobID(id string) bool { return jobIDRe.MatchString(id) }

// InternalID builds the workflow ID of an internal workflow.
func InternalID(kind, key string) string { return "nimbus-" + kind + "-" + key }

// ParseInternalID splits an internal workflow ID into kind and key.
func ParseInternalID(id string) (kind, key string, ok bool) {
	rest, found := strings.CutPrefix(id, "nimbus-")
	if !found {
		return "", "", false
	}
	kind, key, ok = strings.Cut(rest, "-")
	return kind, key, ok
}

// Dial connects to Temporal and checks it answers, failing with one clear
// line when it does not.
func Dial(ctx context.Context, address, namespace string, logger *slog.Logger) (client.Client, error) {
	if address == "" {
		return nil, fmt.Errorf("temporal: no address (set --temporal-address or NIMBUS_TEMPORAL_ADDRESS)")
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.DialContext(dctx, client.Options{
		HostPort:  address,
		Namespace: namespace,
		Logger:    sdklog.NewStructuredLogger(quiet(logger)),
	})
	if err != nil {
		return nil, fmt.Errorf("temporal at %s unreachable: %s", address, oneLine(err))
	}
	if _, err := c.CheckHealth(dctx, &client.CheckHealthRequest{}); err != nil {
		c.Close()
		return nil, fmt.Errorf("temporal at %s unhealthy: %s", address, oneLine(err))
	}
	return c, nil
}

// quiet drops the SDK's chatty info logs; warnings and errors pass.
func quiet(l *slog.Logger) *slog.Logger {
	if l == nil {
		l = slog.Default()
	}
	return slog.New(levelFilter{l.Handler(), slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

// EnsureSearchAttributes registers Nimbus's search attributes in the
// namespace when missing. It is idempotent and works on the dev server and a
// real cluster alike.
func EnsureSearchAttributes(ctx context.Context, c client.Client, namespace string) error {
	ops := c.OperatorService()
	have, err := ops.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("temporal: list search attributes: %w", err)
	}
	want := map[string]enums.IndexedValueType{}
	for _, k := range searchAttributes {
		if _, ok := have.CustomAttributes[k.GetName()]; !ok {
			want[k.GetName()] = enums.INDEXED_VALUE_TYPE_KEYWORD
		}
	}
	if len(want) == 0 {
		return nil
	}
	if _, err := ops.AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: want,
	}); err != nil && !strings.Contains(err.Error(), "already") {
		return fmt.Errorf("temporal: add search attributes: %w", err)
	}
	// The frontend caches the namespace's attributes; wait until they show.
	for i := 0; i < 50; i++ {
		have, err = ops.ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
		if err == nil {
			missing := false
			for name := range want {
				if _, ok := have.CustomAttributes[name]; !ok {
					missing = true
				}
			}
			if !missing {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// UILink is the Temporal Web UI page of a workflow.
func UILink(uiBase, namespace, workflowID string) string {
	if uiBase == "" {
		return ""
	}
	return strings.TrimRight(uiBase, "/") + "/namespaces/" + namespace + "/workflows/" + workflowID
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
