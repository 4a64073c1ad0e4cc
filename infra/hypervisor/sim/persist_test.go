package sim

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

// state renders everything the simulator holds, for comparisons.
func state(t *testing.T, d *Driver) string {
	t.Helper()
	var lines []string
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		for _, h := range s.hosts {
			lines = append(lines, fmt.Sprintf("host %s %s %+v", h.id, h.url, h.scope))
			for _, v := range h.vms {
				spec, err := decodeSpec(v.spec)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := json.Marshal(spec)
				lines = append(lines, fmt.Sprintf("vm %s %s %s", h.id, v.State(), b))
			}
		}
		s.mu.Unlock()
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// workload runs a mix of every mutating operation.
func workload(t *testing.T, d *Driver, n int) {
	t.Helper()
	ctx := context.Background()
	hosts := []hypervisor.Host{testHost("h1"), testHost("h2"), testHost("h3")}
	for _, h := range hosts {
		connect(t, d, h)
	}
	for i := 0; i < n; i++ {
		h := hosts[i%2]
		spec := testSpec(i)
		spec.Metadata = map[string]string{"account": "admin", "n": strconv.Itoa(i)}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("vm %d: %v", i, err)
			}
		}
		_, err := d.DefineVM(ctx, h, spec)
		must(err)
		switch i % 7 {
		case 0:
			must(d.StartVM(ctx, h, spec.Ref()))
		case 1:
			must(d.StartVM(ctx, h, spec.Ref()))
			must(d.MigrateVM(ctx, h, spec.Ref(), hosts[2], hypervisor.MigrateOptions{Live: true}))
		case 2:
			must(d.AttachVolume(ctx, h, spec.Ref(), hypervisor.Disk{Path: fmt.Sprintf("data-%d", i), DeviceID: 1}))
			must(d.ResizeVM(ctx, h, spec.Ref(), hypervisor.Resize{VCPUs: 8}))
		case 3:
			must(d.DestroyVM(ctx, h, spec.Ref()))
		case 4:
			must(d.StartVM(ctx, h, spec.Ref()))
			must(d.SetVMState(h.ID, spec.UUID, hypervisor.StateStopped, "crashed"))
		case 5:
			must(d.StartVM(ctx, h, spec.Ref()))
			must(d.StopVM(ctx, h, spec.Ref(), hypervisor.StopOptions{}))
			must(d.MigrateVM(ctx, h, spec.Ref(), hosts[2], hypervisor.MigrateOptions{}))
		}
	}
	connect(t, d, hypervisor.Host{ID: "gone", URL: "sim://gone"})
	d.DefineVM(ctx, hypervisor.Host{ID: "gone"}, testSpec(100000))
	if err := d.RemoveHost("gone"); err != nil {
		t.Fatal(err)
	}
	// Reconnect with a new size and zone: the change is kept.
	h1 := testHost("h1")
	h1.URL, h1.ZoneID = "sim://h1?cpus=64", "z9"
	connect(t, d, h1)
}

func TestPersistence(t *testing.T) {
	tests := map[string]struct {
		compactBytes int64
		compact      bool // force a snapshot midway
		crash        bool // reopen without Close
		vms          int
	}{
		"close and reopen":            {vms: 60},
		"crash":                       {crash: true, vms: 60},
		"crash after a snapshot":      {compact: true, crash: true, vms: 60},
		"crash amid many compactions": {compactBytes: 4 << 10, crash: true, vms: 300},
		"close amid many compactions": {compactBytes: 4 << 10, vms: 300},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := OpenWith(dir, Options{CompactBytes: tc.compactBytes})
			if err != nil {
				t.Fatal(err)
			}
			workload(t, d, tc.vms/2)
			if tc.compact {
				if err := d.Compact(); err != nil {
					t.Fatal(err)
				}
			}
			workload(t, d, tc.vms)
			if _, err := d.Faults().Add(simkit.Rule{Op: "StartVM", Count: 3, Scope: simkit.Scope{Cluster: "c1"}}); err != nil {
				t.Fatal(err)
			}
			want := state(t, d)
			if tc.crash {
				d.crash()
			} else if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			d2 := open(t, dir)
			if got := state(t, d2); got != want {
				t.Fatalf("state after reopen differs:\n got: %s\nwant: %s", got, want)
			}
			if r := d2.Faults().Rules(); len(r) != 1 || r[0].Count != 3 {
				t.Errorf("fault rules after reopen: %+v", r)
			}
			d2.Faults().Clear(simkit.Scope{}, true)
			st := d2.Stats()
			if st.Hosts != 3 || st.VMs == 0 {
				t.Errorf("stats %+v", st)
			}
			// Still usable, and a third generation reads the second's writes.
			workload(t, d2, 10)
			want = state(t, d2)
			d2.crash()
			if got := state(t, open(t, dir)); got != want {
				t.Fatal("state after a second reopen differs")
			}
		})
	}
}

func TestDataDirOwnedOnce(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open of %s: %v", dir, err)
	}
}

func TestTornJournalTail(t *testing.T) {
	dir := t.TempDir()
	d := open(t, dir)
	workload(t, d, 20)
	want := state(t, d)
	d.crash()
	// A write cut short by the crash of the machine leaves part of a frame.
	rec := (&record{T: recVM, Host: "h1", State: 1, Spec: encodeSpec(&hypervisor.VMSpec{Name: "i-half", UUID: "half", VCPUs: 1, MemoryBytes: 1})}).appendTo(nil)
	frame := binary.LittleEndian.AppendUint32(nil, uint32(len(rec)))
	frame = binary.LittleEndian.AppendUint32(frame, crc32.Checksum(rec, crc32.MakeTable(crc32.Castagnoli)))
	frame = append(frame, rec...)
	logs, _ := filepath.Glob(filepath.Join(dir, "journal-*.log"))
	f, err := os.OpenFile(logs[len(logs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(frame[:len(frame)/2])
	f.Close()
	d2 := open(t, dir)
	if got := state(t, d2); got != want {
		t.Fatal("torn tail changed the state")
	}
	workload(t, d2, 5) // appends after the cut
	want = state(t, d2)
	d2.crash()
	if got := state(t, open(t, dir)); got != want {
		t.Fatal("records after a torn tail were lost")
	}
}

// TestKill9 runs operations in a child process, kills it with SIGKILL in
// the middle, and checks every operation the child saw succeed is there.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	for round := 0; round < 2; round++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SIM_KILL9_DIR="+dir, fmt.Sprintf("SIM_KILL9_ROUND=%d", round))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[string]string{} // uuid -> last acknowledged state
		sc := bufio.NewScanner(out)
		deadline := time.After(20 * time.Second)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 3 && f[0] == "ok" {
				acked[f[1]] = f[2]
				n++
			}
			if n == 1500 {
				break
			}
			select {
			case <-deadline:
				t.Fatal("child too slow")
			default:
			}
		}
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		cmd.Wait()
		if n < 1500 {
			t.Fatalf("child acknowledged only %d operations", n)
		}
		d, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		h := hypervisor.Host{ID: fmt.Sprintf("k%d", round)}
		vms, err := d.ListVMs(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]string{}
		for _, v := range vms {
			have[v.UUID] = string(v.State)
		}
		for uuid, st := range acked {
			if have[uuid] != st && !(st == "Defined" && have[uuid] != "") {
				t.Errorf("round %d: vm %s acknowledged %s, found %q after kill -9", round, uuid, st, have[uuid])
			}
		}
		d.Close()
	}
}

// TestMain runs the child of TestKill9 when asked to.
func TestMain(m *testing.M) {
	if dir := os.Getenv("SIM_KILL9_DIR"); dir != "" {
		kill9Child(dir)
	}
	os.Exit(m.Run())
}

// kill9Child defines and starts VMs until killed, acknowledging each
// operation on stdout once it returned.
func kill9Child(dir string) {
	d, err := OpenWith(dir, Options{CompactBytes: 32 << 10}) // compact often
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	h := hypervisor.Host{ID: "k" + os.Getenv("SIM_KILL9_ROUND"), URL: "sim://k"}
	if _, err := d.ConnectHost(ctx, h); err != nil {
		fmt.Println("connect:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	for i := 0; ; i++ {
		spec := testSpec(i)
		if _, err := d.DefineVM(ctx, h, spec); err != nil {
			fmt.Println("define:", err)
			os.Exit(2)
		}
		fmt.Fprintf(w, "ok %s Defined\n", spec.UUID)
		w.Flush()
		if err := d.StartVM(ctx, h, spec.Ref()); err != nil {
			fmt.Println("start:", err)
			os.Exit(2)
		}
		fmt.Fprintf(w, "ok %s Running\n", spec.UUID)
		w.Flush()
	}
}
