package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/infra/secrets"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/nimbus once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nimbus-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "nimbus")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/nimbus")
		cmd.Dir = RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/nimbus: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StackOptions tunes a stack.
type StackOptions struct {
	// Env adds NIMBUS_* (or other) variables to both processes.
	Env []string
	// Workers is how many worker processes to start (default 1).
	Workers int
}

// Stack is a running Nimbus: one server process and worker processes
// against a fresh MariaDB database and the shared Temporal dev server, on a
// task queue of its own.
type Stack struct {
	t         testing.TB
	Dir       string
	URL       string // base URL, e.g. http://127.0.0.1:PORT
	APIURL    string // URL + /client/api
	DSN       string
	TaskQueue string
	Temporal  string
	Admin     api.AdminCreds
	DB        *bun.DB
	// Client is the CloudStack Go SDK signed in as the root admin.
	Client *cloudstack.CloudStackClient

	env     []string
	server  *Proc
	workers []*Proc
}

// Proc is one nimbus child process.
type Proc struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartStack brings up a whole stack and waits until a worker answers.
func StartStack(t testing.TB, opts StackOptions) *Stack {
	t.Helper()
	bin := Binary(t)
	s := &Stack{
		t: t, Dir: t.TempDir(), DSN: MySQLDSN(t), TaskQueue: RandomName("nimbus-test-"),
		Temporal: TemporalAddress(t),
	}
	port := FreePort(t)
	s.URL = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.APIURL = s.URL + "/client/api"
	s.env = append(os.Environ(),
		"NIMBUS_DB="+s.DSN,
		"NIMBUS_DATA_DIR="+s.Dir,
		"NIMBUS_TEMPORAL_ADDRESS="+s.Temporal,
		"NIMBUS_TASK_QUEUE="+s.TaskQueue,
		"NIMBUS_LISTEN="+fmt.Sprintf("127.0.0.1:%d", port),
		"NIMBUS_TEMPORAL_UI_URL="+os.Getenv("NIMBUS_TEST_TEMPORAL_UI"),
		"NIMBUS_RATE_LIMIT=0",
	)
	s.env = append(s.env, opts.Env...)

	mig := exec.Command(bin, "migrate")
	mig.Env = s.env
	out, err := mig.CombinedOutput()
	if err != nil {
		t.Fatalf("nimbus migrate: %v\n%s", err, out)
	}
	s.DB = OpenDB(t, s.DSN)
	box, err := secrets.LoadOrCreate(filepath.Join(s.Dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Admin, err = api.EnsureAdmin(context.Background(), s.DB, box); err != nil {
		t.Fatal(err)
	}

	s.server = s.Start("server")
	n := opts.Workers
	if n == 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		s.StartWorker()
	}
	t.Cleanup(s.Stop)
	s.WaitHealthy(60 * time.Second)
	s.Client = cloudstack.NewAsyncClient(s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, false)
	s.Client.AsyncTimeout(120)
	return s
}

// Start runs `nimbus <sub>` as a child process with the stack's env.
func (s *Stack) Start(sub string, extraEnv ...string) *Proc {
	s.t.Helper()
	p := &Proc{Name: sub, Log: filepath.Join(s.Dir, fmt.Sprintf("%s-%d.log", sub, time.Now().UnixNano())), done: make(chan struct{})}
	logf, err := os.Create(p.Log)
	if err != nil {
		s.t.Fatal(err)
	}
	p.cmd = exec.Command(Binary(s.t), sub)
	p.cmd.Env = append(append([]string{}, s.env...), extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		s.t.Fatalf("start nimbus %s: %v", sub, err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	return p
}

// StartWorker adds a worker process.
func (s *Stack) StartWorker() *Proc {
	p := s.Start("worker")
	s.workers = append(s.workers, p)
	return p
}

// Workers are the worker processes started so far (killed ones included).
func (s *Stack) Workers() []*Proc { return s.workers }

// Server is the server process.
func (s *Stack) Server() *Proc { return s.server }

// Kill sends SIGKILL, the way a crash ends a process, and waits for it.
func (p *Proc) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM and waits (SIGKILL after 15 s).
func (p *Proc) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
	}
}

// Exited tells whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends every process of the stack; on failure it prints their logs.
func (s *Stack) Stop() {
	procs := append([]*Proc{s.server}, s.workers...)
	for _, p := range procs {
		if p != nil {
			p.Stop()
		}
	}
	s.forgetTemporal()
	if s.t.Failed() {
		for _, p := range procs {
			if p != nil {
				s.t.Logf("--- nimbus %s log (%s), last lines:\n%s", p.Name, p.Log, tail(p.Log, 40))
			}
		}
	}
}

// WaitHealthy polls /healthz?worker=true until the server, Temporal and a
// worker answer.
func (s *Stack) WaitHealthy(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if s.server.Exited() {
			s.t.Fatalf("nimbus server exited:\n%s", tail(s.server.Log, 30))
		}
		resp, err := http.Get(s.URL + "/healthz?worker=true")
		if err == nil {
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = fmt.Sprint(resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Fatalf("stack not healthy after %s: %s\nserver log:\n%s", timeout, last, tail(s.server.Log, 30))
}
