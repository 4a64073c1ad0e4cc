package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nimbus-cloud/nimbus/api"
)

// runAPI is `nimbus api <command> key=value...`: a signed call with the
// admin's keys from <data-dir>/admin.json (or flags), printing the JSON. For
// an async command it waits for the job unless --wait=false.
func runAPI(ctx context.Context, args []string, _ *slog.Logger) error {
	fs := flag.NewFlagSet("nimbus api", flag.ContinueOnError)
	dataDir := fs.String("data-dir", envDefault("NIMBUS_DATA_DIR", ".nimbus"), "where nimbus dev wrote admin.json")
	apiURL := fs.String("url", "", "API URL (default: from admin.json)")
	apiKey := fs.String("apikey", "", "API key (default: from admin.json)")
	secret := fs.String("secretkey", "", "secret key (default: from admin.json)")
	wait := fs.Bool("wait", true, "wait for an async command's job and print its result")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: nimbus api [flags] <command> [key=value ...]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return flag.ErrHelp
	}
	if *apiURL == "" || *apiKey == "" || *secret == "" {
		var admin map[string]string
		path := filepath.Join(*dataDir, "admin.json")
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("no credentials: give --url/--apikey/--secretkey or start nimbus dev first (%v)", err)
		}
		if err := json.Unmarshal(b, &admin); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		*apiURL, *apiKey, *secret = or(*apiURL, admin["url"]), or(*apiKey, admin["apikey"]), or(*secret, admin["secretkey"])
	}
	params := url.Values{"command": {fs.Arg(0)}}
	for _, kv := range fs.Args()[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("argument %q: want key=value", kv)
		}
		params.Add(k, v)
	}
	body, err := signedCall(ctx, *apiURL, *apiKey, *secret, params)
	if err != nil {
		return err
	}
	if *wait {
		var resp map[string]map[string]any
		if json.Unmarshal(body, &resp) == nil {
			for _, r := range resp {
				if jobID, ok := r["jobid"].(string); ok && len(r) <= 3 {
					body, err = waitJob(ctx, *apiURL, *apiKey, *secret, jobID)
					if err != nil {
						return err
					}
				}
			}
		}
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") == nil {
		body = pretty.Bytes()
	}
	fmt.Println(string(body))
	return nil
}

func waitJob(ctx context.Context, apiURL, apiKey, secret, jobID string) ([]byte, error) {
	for {
		body, err := signedCall(ctx, apiURL, apiKey, secret, url.Values{"command": {"queryAsyncJobResult"}, "jobid": {jobID}})
		if err != nil {
			return nil, err
		}
		var r struct {
			Q struct {
				JobStatus int `json:"jobstatus"`
			} `json:"queryasyncjobresultresponse"`
		}
		if json.Unmarshal(body, &r) != nil || r.Q.JobStatus != 0 {
			return body, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func signedCall(ctx context.Context, apiURL, apiKey, secret string, params url.Values) ([]byte, error) {
	params.Set("apiKey", apiKey)
	params.Set("response", "json")
	params.Set("signature", api.Sign(params, secret))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL, strings.NewReader(params.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func envDefault(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
