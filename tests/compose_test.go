package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// TestDockerCompose checks docker-compose.yml without Docker (no images can
// be pulled here): it parses, every service it depends on exists, images are
// pinned, nimbus services run real subcommands with env variables the binary
// knows, and the Dockerfile builds the binary with go.mod's Go version.
func TestDockerCompose(t *testing.T) {
	root := testenv.RepoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       any               `yaml:"build"`
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]struct {
				Condition string `yaml:"condition"`
			} `yaml:"depends_on"`
			Ports []string `yaml:"ports"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	for _, want := range []string{"mysql", "temporal", "temporal-ui", "nimbus-migrate", "nimbus-server", "nimbus-worker"} {
		if _, ok := compose.Services[want]; !ok {
			t.Errorf("service %s missing", want)
		}
	}

	// Flags the binary knows, from each subcommand's help.
	bin := testenv.Binary(t)
	known := map[string]map[string]bool{}
	envRe := regexp.MustCompile(`\[(NIMBUS_[A-Z_]+)\]`)
	for _, sub := range []string{"server", "worker", "migrate"} {
		out, _ := exec.Command(bin, sub, "-h").CombinedOutput()
		known[sub] = map[string]bool{}
		for _, m := range envRe.FindAllStringSubmatch(string(out), -1) {
			known[sub][m[1]] = true
		}
		if len(known[sub]) == 0 {
			t.Fatalf("nimbus %s -h lists no NIMBUS_ variables:\n%s", sub, out)
		}
	}

	for name, svc := range compose.Services {
		if svc.Image == "" && svc.Build == nil {
			t.Errorf("%s: neither image nor build", name)
		}
		if svc.Image != "" && (strings.HasSuffix(svc.Image, ":latest") || !strings.Contains(svc.Image, ":")) {
			t.Errorf("%s: image %q is not pinned", name, svc.Image)
		}
		for dep := range svc.DependsOn {
			if _, ok := compose.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
		}
		if !strings.HasPrefix(name, "nimbus-") {
			continue
		}
		if len(svc.Command) == 0 || known[svc.Command[0]] == nil {
			t.Errorf("%s: command %v is not a nimbus subcommand", name, svc.Command)
			continue
		}
		for k := range svc.Environment {
			if strings.HasPrefix(k, "NIMBUS_") && !known[svc.Command[0]][k] && k != "NIMBUS_SERVER_KEY" {
				t.Errorf("%s: nimbus %s has no setting %s", name, svc.Command[0], k)
			}
		}
		if db := svc.Environment["NIMBUS_DB"]; !strings.HasPrefix(db, "mysql://") || !strings.Contains(db, "@tcp(mysql:3306)/") {
			t.Errorf("%s: NIMBUS_DB %q does not point at the mysql service", name, db)
		}
		if ta := svc.Environment["NIMBUS_TEMPORAL_ADDRESS"]; svc.Command[0] != "migrate" && ta != "temporal:7233" {
			t.Errorf("%s: NIMBUS_TEMPORAL_ADDRESS %q, want temporal:7233", name, ta)
		}
	}

	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, _ := os.ReadFile(filepath.Join(root, "go.mod"))
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVer == nil || !strings.Contains(string(df), "golang:"+string(goVer[1])) {
		t.Errorf("Dockerfile does not build with go.mod's Go version %s", goVer)
	}
	if !strings.Contains(string(df), "./cmd/nimbus") {
		t.Errorf("Dockerfile does not build ./cmd/nimbus")
	}
}
