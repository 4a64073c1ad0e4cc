package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/nimbus-cloud/nimbus/api"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
	"github.com/nimbus-cloud/nimbus/workflows"
)

func getJSON(t *testing.T, u string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

// signedGet calls the API with the admin keys as a CloudStack client would.
func signedGet(t *testing.T, apiURL, apiKey, secret string, params url.Values) (int, map[string]any) {
	t.Helper()
	params.Set("apiKey", apiKey)
	params.Set("response", "json")
	params.Set("signature", api.Sign(params, secret))
	return getJSON(t, apiURL+"?"+params.Encode())
}

// TestServerAndWorkerAsProcesses runs nimbus server and nimbus worker as
// separate processes on MariaDB and the Temporal dev server, and checks the
// health endpoint follows the worker's life.
func TestServerAndWorkerAsProcesses(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})

	code, body := getJSON(t, s.URL+"/healthz")
	if code != 200 || body["db"] != "ok" || body["temporal"] != "ok" {
		t.Fatalf("healthz = %d %v, want 200 with db and temporal ok", code, body)
	}
	code, body = getJSON(t, s.URL+"/healthz?worker=true")
	if code != 200 || body["worker"] != "ok" {
		t.Fatalf("healthz?worker=true = %d %v", code, body)
	}

	// A signed call reaches a command and is counted in /metrics.
	code, body = signedGet(t, s.APIURL, s.Admin.APIKey, s.Admin.SecretKey, url.Values{
		"command": {"queryAsyncJobResult"}, "jobid": {"00000000-0000-4000-8000-000000000000"},
	})
	if code != 431 {
		t.Fatalf("queryAsyncJobResult of a missing job = %d %v, want 431", code, body)
	}
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`nimbus_api_requests_total{code="431",command="queryAsyncJobResult"} 1`)) {
		t.Fatalf("/metrics lacks the request count:\n%s", grep(string(metrics), "nimbus_api"))
	}

	// The worker dies: the API still answers, the deep check says no worker.
	s.Workers()[0].Kill()
	code, body = getJSON(t, s.URL+"/healthz")
	if code != 200 {
		t.Fatalf("healthz without worker = %d %v, want 200", code, body)
	}
	code, body = getJSON(t, s.URL+"/healthz?worker=true")
	if code != 503 || !strings.HasPrefix(fmt.Sprint(body["worker"]), "error") {
		t.Fatalf("healthz?worker=true without a worker = %d %v, want 503 with a worker error", code, body)
	}
	s.StartWorker()
	s.WaitHealthy(60 * time.Second)
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBadConfigFailsFast: a wrong DSN, an unreachable DB or Temporal end the
// process at once with one line saying what and where.
func TestBadConfigFailsFast(t *testing.T) {
	bin := testenv.Binary(t)
	dir := t.TempDir()
	goodDB := "sqlite://" + filepath.Join(dir, "nimbus.db")
	if out, err := exec.Command(bin, "migrate", "--data-dir", dir, "--db", goodDB).CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	cases := map[string]struct {
		args []string
		want []string
	}{
		"wrong DSN scheme": {
			args: []string{"server", "--db", "postgres://u:secretpw@localhost/x"},
			want: []string{"--db", "want sqlite://PATH or mysql://"},
		},
		"malformed mysql DSN": {
			args: []string{"worker", "--db", "mysql://nimbus:secretpw@127.0.0.1:3306/x"},
			want: []string{"bad MySQL DSN"},
		},
		"unreachable DB": {
			args: []string{"server", "--db", "mysql://nimbus:secretpw@tcp(127.0.0.1:1)/nimbus"},
			want: []string{"inventory DB", "127.0.0.1:1", "unreachable"},
		},
		"Temporal down": {
			args: []string{"worker", "--db", goodDB, "--temporal-address", "127.0.0.1:1"},
			want: []string{"temporal at 127.0.0.1:1"},
		},
		"schema not migrated": {
			args: []string{"server", "--db", "sqlite://" + filepath.Join(dir, "empty.db")},
			want: []string{"needs migrations", "nimbus migrate"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, append(tc.args, "--data-dir", dir)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			if err == nil {
				t.Fatalf("nimbus %v exited 0", tc.args)
			}
			if took := time.Since(start); took > 30*time.Second {
				t.Errorf("took %s to fail", took)
			}
			msg := strings.TrimSpace(stderr.String())
			if strings.Count(msg, "\n") != 0 || strings.Contains(msg, "goroutine") {
				t.Fatalf("want one line, got:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "secretpw") {
				t.Errorf("message leaks the password: %q", msg)
			}
		})
	}
}

// TestDevQuickstart runs `nimbus dev` as a user would: it starts a Temporal
// dev server, serves API and worker, writes admin.json; Ctrl-C stops
// everything; a second start keeps the inventory and the Temporal history.
func TestDevQuickstart(t *testing.T) {
	bin := testenv.Binary(t)
	dir := filepath.Join(t.TempDir(), "data")
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	tport, uiport := testenv.FreePort(t), testenv.FreePort(t)
	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(bin, "dev", "--data-dir", dir, "--listen", listen,
			"--temporal-port", fmt.Sprint(tport), "--temporal-ui-port", fmt.Sprint(uiport))
		cmd.Env = append(os.Environ(), "NIMBUS_TEMPORAL_BIN="+testenv.TemporalBin(t))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			if resp, err := http.Get("http://" + listen + "/healthz?worker=true"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return cmd, &out
				}
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("nimbus dev not healthy in 90s:\n%s", out.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	stop := func(cmd *exec.Cmd, out *bytes.Buffer) {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("nimbus dev did not stop on SIGINT:\n%s", out.String())
		}
		// Nothing it started survives: no process mentions the data dir.
		if left := processesMentioning(dir); len(left) > 0 {
			t.Fatalf("processes left after Ctrl-C: %v", left)
		}
	}

	cmd, out := start()
	var admin map[string]string
	b, err := os.ReadFile(filepath.Join(dir, "admin.json"))
	if err != nil || json.Unmarshal(b, &admin) != nil {
		t.Fatalf("admin.json: %v %s", err, b)
	}
	for _, k := range []string{"url", "apikey", "secretkey", "temporal_ui"} {
		if admin[k] == "" {
			t.Errorf("admin.json lacks %s: %v", k, admin)
		}
	}
	for _, want := range []string{admin["apikey"], admin["secretkey"], admin["temporal_ui"], "http://" + listen} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("nimbus dev did not print %q", want)
		}
	}
	if resp, err := http.Get(admin["temporal_ui"]); err != nil || resp.StatusCode != 200 {
		t.Errorf("Temporal UI at %s does not answer: %v", admin["temporal_ui"], err)
	} else {
		resp.Body.Close()
	}
	code, body := signedGet(t, admin["url"], admin["apikey"], admin["secretkey"], url.Values{
		"command": {"queryAsyncJobResult"}, "jobid": {"00000000-0000-4000-8000-000000000000"},
	})
	if code != 431 {
		t.Fatalf("signed call with the printed keys = %d %v, want 431 (authenticated, job not found)", code, body)
	}
	// `nimbus api` signs with the keys in admin.json.
	apiOut, err := exec.Command(bin, "api", "--data-dir", dir, "queryAsyncJobResult", "jobid=00000000-0000-4000-8000-000000000000").CombinedOutput()
	if err == nil || !strings.Contains(string(apiOut), "HTTP 431") || !strings.Contains(string(apiOut), "Unable to find job") {
		t.Errorf("nimbus api: err=%v out=%s, want HTTP 431 job not found", err, apiOut)
	}

	// Leave a workflow in Temporal's history.
	tc, err := client.Dial(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", tport)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "nimbus-ping-devtest", TaskQueue: "nimbus"}, workflows.Ping, workflows.PingInput{})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Get(ctx, nil); err != nil {
		t.Fatal(err)
	}
	tc.Close()
	stop(cmd, out)

	// Second start: same keys (inventory kept), same workflow in history.
	cmd, out = start()
	defer stop(cmd, out)
	b, _ = os.ReadFile(filepath.Join(dir, "admin.json"))
	var admin2 map[string]string
	_ = json.Unmarshal(b, &admin2)
	if admin2["apikey"] != admin["apikey"] || admin2["secretkey"] != admin["secretkey"] {
		t.Errorf("keys changed across restart")
	}
	tc, err = client.Dial(client.Options{HostPort: fmt.Sprintf("127.0.0.1:%d", tport)})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if _, err := tc.DescribeWorkflowExecution(ctx, "nimbus-ping-devtest", ""); err != nil {
		t.Errorf("Temporal history lost across restart: %v", err)
	}
}

// processesMentioning lists live processes whose command line has s.
func processesMentioning(s string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid := e.Name()
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + pid + "/cmdline")
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(s)) {
			// A zombie reaped a moment later is not a leak.
			if st, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && bytes.Contains(st, []byte(") Z ")) {
				continue
			}
			out = append(out, pid+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
