// Package cserr is CloudStack's error vocabulary: an error code that is also
// the HTTP status, and a text for the client. It is a leaf package so that
// API handlers, workflows and activities speak the same errors; a workflow
// failure carries the code across Temporal as an application error type.
package cserr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.temporal.io/sdk/temporal"
)

// CloudStack error codes (ApiErrorCode).
const (
	Unauthorized        = 401 // authentication failed
	MethodNotAllowed    = 405 // the role may not call the command
	ParamError          = 431 // bad or missing parameter, wrong state
	UnsupportedAction   = 432 // unknown command or action not supported
	APILimitExceeded    = 429 // rate limited
	InternalError       = 530
	AccountError        = 531
	AccountResourceLim  = 532 // resource limit exceeded
	InsufficientCap     = 533 // no capacity for the request
	ResourceUnavailable = 534
	ResourceAllocation  = 535
	ResourceInUse       = 536
	NetworkRuleConflict = 537
)

// CSExceptionCode is CloudStack's cserrorcode: the Java exception class id
// clients show beside the error.
func CSExceptionCode(code int) int {
	switch code {
	case Unauthorized, MethodNotAllowed, APILimitExceeded:
		return 9999
	case ParamError:
		return 4350 // InvalidParameterValueException
	case UnsupportedAction:
		return 4375 // UnsupportedServiceException
	case InsufficientCap:
		return 4250 // InsufficientCapacityException
	case ResourceUnavailable:
		return 4500 // ResourceUnavailableException
	case ResourceAllocation:
		return 4490 // ResourceAllocationException
	case ResourceInUse:
		return 4495 // ResourceInUseException
	case NetworkRuleConflict:
		return 4380 // NetworkRuleConflictException
	case AccountResourceLim:
		return 4370 // PermissionDeniedException family
	}
	return 4250
}

// Error is an error with a CloudStack code; Text is safe to show clients.
type Error struct {
	Code     int
	Text     string
	UUIDList []string
}

func (e *Error) Error() string { return e.Text }

// New builds an Error with a formatted text.
func New(code int, format string, args ...any) *Error {
	return &Error{Code: code, Text: fmt.Sprintf(format, args...)}
}

// Param is a 431: a parameter is missing, malformed or not allowed now.
func Param(format string, args ...any) *Error { return New(ParamError, format, args...) }

// Internal is a 530.
func Internal(format string, args ...any) *Error { return New(InternalError, format, args...) }

// Capacity is a 533.
func Capacity(format string, args ...any) *Error { return New(InsufficientCap, format, args...) }

// InUse is a 536.
func InUse(format string, args ...any) *Error { return New(ResourceInUse, format, args...) }

// Unavailable is a 534.
func Unavailable(format string, args ...any) *Error { return New(ResourceUnavailable, format, args...) }

// As returns the *Error inside err: a cserr.Error anywhere in the chain, or
// a Temporal application error whose type is "CS<code>". Anything else is a
// 530 with the error's text.
func As(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if code, ok := parseType(app.Type()); ok {
			return &Error{Code: code, Text: app.Message()}
		}
		return &Error{Code: InternalError, Text: app.Message()}
	}
	return &Error{Code: InternalError, Text: err.Error()}
}

// Code returns err's CloudStack code, or 0 when err carries none.
func Code(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		if code, ok := parseType(app.Type()); ok {
			return code
		}
	}
	return 0
}

// Temporal turns err into a Temporal application error that keeps the code
// and is not retried when it is a client error (4xx) or capacity error.
func Temporal(err error) error {
	if err == nil {
		return nil
	}
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return err
	}
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	typ := "CS" + strconv.Itoa(e.Code)
	if e.Code < 500 || e.Code == InsufficientCap || e.Code == ResourceInUse || e.Code == AccountResourceLim {
		return temporal.NewNonRetryableApplicationError(e.Text, typ, nil)
	}
	return temporal.NewApplicationError(e.Text, typ)
}

func parseType(t string) (int, bool) {
	if !strings.HasPrefix(t, "CS") {
		return 0, false
	}
	n, err := strconv.Atoi(t[2:])
	return n, err == nil && n >= 400 && n < 600
}
