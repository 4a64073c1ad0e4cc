package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Error kinds every driver (hypervisor, storage, BMC) wraps, so activities
// map them once: not found, not supported, invalid and capacity are final;
// unreachable is worth retrying. Test with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrNotSupported = errors.New("not supported")
	ErrUnreachable  = errors.New("unreachable")
	ErrInvalid      = errors.New("invalid")
	ErrCapacity     = errors.New("insufficient capacity")
)

// OpError is a failed driver operation: which driver, which operation, on
// what, which kind of failure and the cause.
type OpError struct {
	Driver string // driver name, e.g. Simulator, KVM, ipmi
	Op     string // operation, e.g. StartVM
	Target string // what it acted on (VM, host, pool, URL); may be empty
	Kind   error  // one of the Err* kinds, or nil for an unclassified failure
	Err    error  // cause; may be nil
}

// Error reads "Simulator StartVM i-2-3-VM: not found: no such vm on host h1".
func (e *OpError) Error() string {
	var b strings.Builder
	b.WriteString(e.Driver)
	if e.Op != "" {
		b.WriteString(" " + e.Op)
	}
	if e.Target != "" {
		b.WriteString(" " + e.Target)
	}
	if e.Kind != nil {
		b.WriteString(": " + e.Kind.Error())
	}
	if e.Err != nil && (e.Kind == nil || e.Err.Error() != e.Kind.Error()) {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes both the kind and the cause to errors.Is and errors.As.
func (e *OpError) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// Errorf builds an OpError of the given kind with a formatted cause.
func Errorf(driver, op, target string, kind error, format string, args ...any) error {
	var cause error
	if format != "" {
		cause = fmt.Errorf(format, args...)
	}
	return &OpError{Driver: driver, Op: op, Target: target, Kind: kind, Err: cause}
}

// ErrorType names an error's kind for Temporal application errors:
// "NotFound", "NotSupported", "Unreachable", "Invalid", "Capacity", or ""
// for an unclassified error.
func ErrorType(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotSupported):
		return "NotSupported"
	case errors.Is(err, ErrNotFound):
		return "NotFound"
	case errors.Is(err, ErrInvalid):
		return "Invalid"
	case errors.Is(err, ErrCapacity):
		return "Capacity"
	case errors.Is(err, ErrUnreachable):
		return "Unreachable"
	}
	return ""
}

// Retryable tells whether trying the same call again may succeed: true for
// unreachable and unclassified failures (and deadlines), false for not
// found, not supported, invalid, capacity and cancellation.
func Retryable(err error) bool {
	switch ErrorType(err) {
	case "NotFound", "NotSupported", "Invalid", "Capacity":
		return false
	}
	return err != nil && !errors.Is(err, context.Canceled)
}

// NewError returns an error reading exactly as formatted that errors.Is
// matches against kind (and against a %w operand, if any).
func NewError(kind error, format string, args ...any) error {
	return &kindError{err: fmt.Errorf(format, args...), kind: kind}
}

type kindError struct {
	err  error
	kind error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }
