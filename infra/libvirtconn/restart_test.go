package libvirtconn

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// restartLibvirtd stops the libvirtd whose pid is in pidFile and starts it
// again the way scripts/services.sh does. Running guests survive it.
func restartLibvirtd(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", pidFile, err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("kill libvirtd %d: %v", pid, err)
	}
	start := time.Now()
	for syscall.Kill(pid, 0) == nil {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("libvirtd %d did not exit", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := exec.Command("libvirtd", "-d", "--pid-file", pidFile).CombinedOutput()
	if err != nil {
		t.Fatalf("start libvirtd: %v: %s", err, out)
	}
	t.Logf("libvirtd restarted (was down %v)", time.Since(start).Round(time.Millisecond))
}
