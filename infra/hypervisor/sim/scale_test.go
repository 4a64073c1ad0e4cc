package sim

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

const (
	scaleHosts = 25_000
	scaleVMs   = 250_000
)

func scaleHost(i int) hypervisor.Host {
	return hypervisor.Host{
		ID:        fmt.Sprintf("5c0e7d6a-0000-4000-8000-%012d", i),
		URL:       fmt.Sprintf("sim://host-%d?cpus=32&mhz=2400&memory=131072", i),
		ZoneID:    fmt.Sprintf("zone-%d", i/10000),
		PodID:     fmt.Sprintf("pod-%d", i/1000),
		ClusterID: fmt.Sprintf("cluster-%d", i/100),
	}
}

// scaleSpec is a realistic VM: one root disk, one NIC; every string is its
// own allocation, as when decoded from an activity input.
func scaleSpec(i int) hypervisor.VMSpec {
	n := strconv.Itoa(i)
	ip := strconv.Itoa(int(byte(i>>16))) + "." + strconv.Itoa(int(byte(i>>8))) + "." + strconv.Itoa(int(byte(i)))
	return hypervisor.VMSpec{
		Name: "i-2-" + n + "-VM", UUID: "9e1f0c3a-0000-4000-8000-" + fmt.Sprintf("%012d", i),
		VCPUs: 1, MHz: 500, MemoryBytes: 512 << 20, OSType: strings.Clone("Debian GNU/Linux 12 (64-bit)"),
		Disks: []hypervisor.Disk{{VolumeID: "7a0b-" + n, Pool: strings.Clone("pool-1"), Path: "7a0b-" + n,
			Format: strings.Clone("qcow2"), Bus: strings.Clone("virtio"), SizeBytes: 8 << 30}},
		NICs: []hypervisor.NIC{{MAC: "02:00:" + ip, Label: strings.Clone("cloudbr0"), IP: "10." + ip,
			Netmask: strings.Clone("255.0.0.0"), Gateway: strings.Clone("10.0.0.1"), Model: strings.Clone("virtio"), Default: true}},
	}
}

// parallel runs fn(i) for i in [0,n) on workers goroutines and returns
// the wall time.
func parallel(t testing.TB, n, workers int, fn func(i int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		t.Fatal(*p)
	}
	return time.Since(start)
}

func heapMiB() (heap, sys float64) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapAlloc) / (1 << 20), float64(m.Sys) / (1 << 20)
}

// TestScale holds 25,000 hosts and 250,000 running VMs in one simulator,
// persisted with the default sync mode, and reopens it. It reports memory
// and per-operation times:
//
//	go test ./infra/hypervisor/sim/ -run TestScale -count=1 -v
func TestScale(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	heap0, _ := heapMiB()
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	hosts := make([]hypervisor.Host, scaleHosts)
	for i := range hosts {
		hosts[i] = scaleHost(i)
	}
	workers := 256 // concurrent activities; creations share fsyncs (group commit)
	tConnect := parallel(t, scaleHosts, workers, func(i int) error {
		_, err := d.ConnectHost(ctx, hosts[i])
		return err
	})
	tDefine := parallel(t, scaleVMs, workers, func(i int) error {
		_, err := d.DefineVM(ctx, hosts[i%scaleHosts], scaleSpec(i))
		return err
	})
	tStart := parallel(t, scaleVMs, workers, func(i int) error {
		return d.StartVM(ctx, hosts[i%scaleHosts], hypervisor.VMRef{UUID: "9e1f0c3a-0000-4000-8000-" + fmt.Sprintf("%012d", i)})
	})
	heap1, sys1 := heapMiB()
	st := d.Stats()
	if st.Hosts != scaleHosts || st.VMs != scaleVMs || st.RunningVMs != scaleVMs {
		t.Fatalf("stats %+v", st)
	}
	start := time.Now()
	vms, err := d.ListVMs(ctx, scaleHost(77))
	tList := time.Since(start)
	if err != nil || len(vms) != scaleVMs/scaleHosts {
		t.Fatalf("ListVMs: %d, %v", len(vms), err)
	}
	hs, err := d.CheckHost(ctx, scaleHost(77))
	if err != nil || hs.RunningVMs != 10 || hs.UsedMemoryBytes != 10*512<<20 {
		t.Fatalf("CheckHost %+v %v", hs, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	d2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tReopen := time.Since(start)
	defer d2.Close()
	if st2 := d2.Stats(); st2 != st {
		t.Fatalf("after reopen %+v, want %+v", st2, st)
	}
	per := func(total time.Duration, n int) time.Duration { return total / time.Duration(n) }
	t.Logf("%d hosts, %d VMs (GOMAXPROCS=%d, %d workers, data dir persisted, default sync)", scaleHosts, scaleVMs, runtime.GOMAXPROCS(0), workers)
	t.Logf("connect %v (%v/host), define %v (%v/VM), start %v (%v/VM), ListVMs of a host %v, reopen %v",
		tConnect.Round(time.Millisecond), per(tConnect, scaleHosts), tDefine.Round(time.Millisecond), per(tDefine, scaleVMs),
		tStart.Round(time.Millisecond), per(tStart, scaleVMs), tList, tReopen.Round(time.Millisecond))
	t.Logf("heap %.0f MiB live after GC (%.0f bytes/VM incl. hosts), process Sys %.0f MiB", heap1-heap0, (heap1-heap0)*(1<<20)/scaleVMs, sys1)
}

// BenchmarkDefineStart defines and starts VMs over 25,000 hosts from 128
// goroutines, in memory and persisted with the default sync mode:
//
//	go test ./infra/hypervisor/sim/ -run '^$' -bench . -benchmem
func BenchmarkDefineStart(b *testing.B) {
	for _, mode := range []struct {
		name string
		dir  bool
	}{{"memory", false}, {"persisted", true}} {
		b.Run(mode.name, func(b *testing.B) {
			ctx := context.Background()
			dir := ""
			if mode.dir {
				dir = b.TempDir()
			}
			d, err := Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			parallel(b, scaleHosts, 64, func(i int) error {
				_, err := d.ConnectHost(ctx, scaleHost(i))
				return err
			})
			var n atomic.Int64
			b.SetParallelism(64) // concurrent activities: fsyncs are shared
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(n.Add(1))
					h := scaleHost(i % scaleHosts)
					spec := scaleSpec(i)
					if _, err := d.DefineVM(ctx, h, spec); err != nil {
						b.Error(err)
						return
					}
					if err := d.StartVM(ctx, h, spec.Ref()); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
