package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uptrace/bun"
	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/config"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
	"github.com/nimbus-cloud/nimbus/workflows"
)

// Version is the Nimbus version reported by the API.
var Version = "0.1.0"

// Server is the API: stateless, so any number run behind a load balancer.
type Server struct {
	DB        *bun.DB
	Temporal  client.Client
	Namespace string
	TaskQueue string
	Secrets   *secrets.Box
	Cfg       config.Config
	Log       *slog.Logger

	// NoAuth serves every command as the root admin without checking
	// credentials; only the API benchmark's baseline sets it.
	NoAuth bool

	Metrics *Metrics
	keys    *keyCache
	checked jobChecks
	reqSeq  atomic.Uint64
	started time.Time
}

// Metrics are the Prometheus collectors of one server.
type Metrics struct {
	Registry       *prometheus.Registry
	Requests       *prometheus.CounterVec
	Latency        *prometheus.HistogramVec
	WorkflowStarts *prometheus.CounterVec
}

func newMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_api_requests_total", Help: "API requests by command and HTTP status.",
		}, []string{"command", "code"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nimbus_api_request_seconds", Help: "API request latency by command.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"command"}),
		WorkflowStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_workflow_starts_total", Help: "Workflows started by type.",
		}, []string{"workflow"}),
	}
	m.Registry.MustRegister(m.Requests, m.Latency, m.WorkflowStarts,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// New builds a server; Handler serves it.
func New(db *bun.DB, tc client.Client, box *secrets.Box, cfg config.Config, taskQueue string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		DB: db, Temporal: tc, Namespace: cfg.Namespace, TaskQueue: taskQueue, Secrets: box,
		Cfg: cfg, Log: log, Metrics: newMetrics(), keys: newKeyCache(), started: time.Now(),
	}
}

// Handler returns the HTTP handler with every route.
func (s *Server) Handler() http.Handler {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(s.recoverMiddleware)
	r.GET("/client/api", s.serveAPI)
	r.POST("/client/api", s.serveAPI)
	r.GET("/client/api/", s.serveAPI)
	r.POST("/client/api/", s.serveAPI)
	r.GET("/healthz", s.serveHealth)
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{})))
	for _, rt := range extraRoutes {
		rt(s, r)
	}
	return r
}

// extraRoutes lets other files of the package add routes (docs, UI).
var extraRoutes []func(*Server, *gin.Engine)

func (s *Server) recoverMiddleware(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			rid := s.nextRequestID()
			s.Log.Error("panic serving request", "request_id", rid, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			writeError(c, "errorresponse", cserr.Internal("internal error (request %s)", rid))
			c.Abort()
		}
	}()
	c.Next()
}

func (s *Server) nextRequestID() string {
	return strconv.FormatInt(s.started.Unix(), 36) + "-" + strconv.FormatUint(s.reqSeq.Add(1), 36)
}

// serveAPI is /client/api: parse, authenticate, authorize, validate, run.
func (s *Server) serveAPI(c *gin.Context) {
	start := time.Now()
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.Cfg.MaxBodyBytes)
	raw, err := readParams(c.Request)
	cmdName := raw.Get("command")
	respKey := strings.ToLower(cmdName) + "response"
	metricName := "unknown"
	status := http.StatusOK
	defer func() {
		s.Metrics.Requests.WithLabelValues(metricName, strconv.Itoa(status)).Inc()
		s.Metrics.Latency.WithLabelValues(metricName).Observe(time.Since(start).Seconds())
	}()
	fail := func(err error) {
		e := cserr.As(err)
		status = e.Code
		writeError(c, respKey, e)
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fail(cserr.Param("request larger than %d bytes", s.Cfg.MaxBodyBytes))
			return
		}
		fail(cserr.Param("malformed request: %v", err))
		return
	}
	if r := raw.Get("response"); r != "" && !strings.EqualFold(r, "json") {
		fail(cserr.Param("response=%s is not supported: Nimbus answers JSON only (response=json)", clip(r, 16)))
		return
	}
	if cmdName == "" {
		fail(cserr.Param("missing parameter command"))
		return
	}
	cmd := Lookup(cmdName)
	if cmd == nil {
		respKey = "errorresponse"
		fail(cserr.New(cserr.UnsupportedAction, "The given command %q either does not exist, is not available for user, or not available from ip address", clip(cmdName, 64)))
		return
	}
	metricName = cmd.Name
	respKey = strings.ToLower(cmd.Name) + "response"

	call := &Call{Ctx: c.Request.Context(), S: s, Cmd: cmd, RequestID: s.nextRequestID(), params: lowerKeys(raw)}
	if !cmd.NoAuth {
		caller, err := s.authenticate(c, raw)
		if err != nil {
			fail(err)
			return
		}
		call.Caller = caller
		if err := s.rateLimit(c, caller); err != nil {
			fail(err)
			return
		}
		if err := s.authorize(call.Ctx, caller, cmd); err != nil {
			fail(err)
			return
		}
	} else if err := s.rateLimit(c, nil); err != nil {
		fail(err)
		return
	}
	if err := validate(cmd, call.params); err != nil {
		fail(err)
		return
	}
	out, err := s.run(call)
	if err != nil {
		if cserr.Code(err) == 0 {
			s.Log.Error("command failed", "command", cmd.Name, "request_id", call.RequestID, "err", err)
			// The cause (often a DB error) stays in the log: clients get
			// the request id to quote, not the inventory's internals.
			err = cserr.Internal("internal error in %s; the server log has the cause (request %s)", cmd.Name, call.RequestID)
		}
		fail(err)
		return
	}
	for _, ck := range call.setCookies {
		http.SetCookie(c.Writer, &http.Cookie{Name: ck.name, Value: ck.value, Path: "/client", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Request.TLS != nil})
	}
	writeJSON(c, http.StatusOK, map[string]any{respKey: sdkCompat(cmd.Name, out)})
}

// run calls the handler, turning a panic into a 530 with the request id.
func (s *Server) run(call *Call) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.Log.Error("panic in command", "command", call.Cmd.Name, "request_id", call.RequestID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			out, err = nil, cserr.Internal("internal error (request %s)", call.RequestID)
		}
	}()
	return call.Cmd.Handler(call)
}

// readParams merges the query string and a form body.
func readParams(r *http.Request) (url.Values, error) {
	if err := r.ParseForm(); err != nil {
		return nil, err
	}
	return r.Form, checkParamNames(r.Form)
}

func lowerKeys(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vs := range v {
		lk := strings.ToLower(k)
		out[lk] = append(out[lk], vs...)
	}
	return out
}

// errorBody is CloudStack's error object.
type errorBody struct {
	UUIDList    []string `json:"uuidList"`
	ErrorCode   int      `json:"errorcode"`
	CSErrorCode int      `json:"cserrorcode"`
	ErrorText   string   `json:"errortext"`
}

func writeError(c *gin.Context, key string, e *cserr.Error) {
	list := e.UUIDList
	if list == nil {
		list = []string{}
	}
	writeJSON(c, e.Code, map[string]any{key: errorBody{
		UUIDList: list, ErrorCode: e.Code, CSErrorCode: cserr.CSExceptionCode(e.Code), ErrorText: e.Text,
	}})
}

func writeJSON(c *gin.Context, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"errorresponse":{"uuidList":[],"errorcode":530,"cserrorcode":4250,"errortext":"cannot encode response"}}`)
	}
	c.Data(status, "application/json; charset=utf-8", b)
}

// serveHealth reports DB and Temporal reachability; with ?worker=true it
// also runs a Ping workflow, proving a worker polls the task queue.
func (s *Server) serveHealth(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 10*time.Second)
	defer cancel()
	out := gin.H{"version": Version}
	ok := true
	if err := s.DB.PingContext(ctx); err != nil {
		out["db"] = "error: " + err.Error()
		ok = false
	} else {
		out["db"] = "ok"
	}
	if _, err := s.Temporal.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		out["temporal"] = "error: " + err.Error()
		ok = false
	} else {
		out["temporal"] = "ok"
	}
	if c.Query("worker") == "true" && ok {
		run, err := s.Temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: "nimbus-ping-" + s.nextRequestID(), TaskQueue: s.TaskQueue,
			WorkflowExecutionTimeout: 10 * time.Second,
		}, workflows.Ping, workflows.PingInput{})
		if err == nil {
			var res any
			err = run.Get(ctx, &res)
			out["worker_answer"] = res
		}
		if err != nil {
			out["worker"] = "error: " + err.Error()
			ok = false
		} else {
			out["worker"] = "ok"
		}
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, out)
}
