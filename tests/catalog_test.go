package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/cloudstack-go/v2/cloudstack"

	"github.com/nimbus-cloud/nimbus/models"
	"github.com/nimbus-cloud/nimbus/tests/testenv"
)

// catWant431 fails unless err is a 431 whose text mentions every part.
func catWant431(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), "431") {
		t.Errorf("%s: want a 431, got %v", what, err)
		return
	}
	for _, p := range parts {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(p)) {
			t.Errorf("%s: error %q does not mention %q", what, err, p)
		}
	}
}

func catCount(t *testing.T, s *testenv.Stack, model any, where string, args ...any) int {
	t.Helper()
	q := s.DB.NewSelect().Model(model)
	if where != "" {
		q = q.Where(where, args...)
	}
	if s.DB.Dialect().Tables().Get(reflect.TypeOf(model)).SoftDeleteField != nil {
		q = q.WhereAllWithDeleted()
	}
	n, err := q.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func TestCatalogOfferings(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client

	// OS types and categories come from the seed.
	cats, err := cs.GuestOS.ListOsCategories(cs.GuestOS.NewListOsCategoriesParams())
	if err != nil || cats.Count != len(models.DefaultOSCategories()) {
		t.Fatalf("listOsCategories: %v %+v", err, cats)
	}
	types, err := cs.GuestOS.ListOsTypes(cs.GuestOS.NewListOsTypesParams())
	if err != nil || types.Count != len(models.DefaultOSTypes()) {
		t.Fatalf("listOsTypes: %v count %d", err, types.Count)
	}
	op := cs.GuestOS.NewListOsTypesParams()
	op.SetId(models.OSTypeOtherLinux64UUID)
	if types, err = cs.GuestOS.ListOsTypes(op); err != nil || types.Count != 1 ||
		types.OsTypes[0].Description != "Other Linux (64-bit)" || types.OsTypes[0].Oscategoryid != models.OSCategoryOtherUUID ||
		types.OsTypes[0].Oscategoryname != "Other" {
		t.Fatalf("listOsTypes id: %v %+v", err, types)
	}
	op = cs.GuestOS.NewListOsTypesParams()
	op.SetOscategoryid(models.OSCategoryOtherUUID)
	if types, err = cs.GuestOS.ListOsTypes(op); err != nil || types.Count != 4 {
		t.Fatalf("listOsTypes oscategoryid: %v %+v", err, types)
	}
	op = cs.GuestOS.NewListOsTypesParams()
	op.SetDescription("ubuntu 22")
	if types, err = cs.GuestOS.ListOsTypes(op); err != nil || types.Count != 1 || !strings.Contains(types.OsTypes[0].Description, "22.04") {
		t.Fatalf("listOsTypes description: %v %+v", err, types)
	}
	op = cs.GuestOS.NewListOsTypesParams()
	op.SetKeyword("windows server")
	if types, err = cs.GuestOS.ListOsTypes(op); err != nil || types.Count != 4 {
		t.Fatalf("listOsTypes keyword: %v %+v", err, types)
	}

	// Compute offerings.
	sop := cs.ServiceOffering.NewCreateServiceOfferingParams("Two CPUs", "two-cpu")
	sop.SetCpunumber(2)
	sop.SetCpuspeed(2000)
	sop.SetMemory(2048)
	sop.SetHosttags("ssd, fast")
	sop.SetTags("gold")
	sop.SetOfferha(true)
	sop.SetLimitcpuuse(true)
	sop.SetStoragetype("local")
	sop.SetProvisioningtype("fat")
	so, err := cs.ServiceOffering.CreateServiceOffering(sop)
	if err != nil {
		t.Fatalf("createServiceOffering: %v", err)
	}
	if so.Name != "two-cpu" || so.Cpunumber != 2 || so.Cpuspeed != 2000 || so.Memory != 2048 || so.Hosttags != "ssd,fast" ||
		so.Storagetags != "gold" || !so.Offerha || !so.Limitcpuuse || so.Storagetype != "local" || so.Provisioningtype != "fat" || so.Iscustomized {
		t.Fatalf("created service offering = %+v", so)
	}
	cop := cs.ServiceOffering.NewCreateServiceOfferingParams("Custom", "custom")
	cop.SetCustomized(true)
	cop.SetMincpunumber(1)
	cop.SetMaxcpunumber(8)
	cop.SetMinmemory(512)
	cop.SetMaxmemory(16384)
	custom, err := cs.ServiceOffering.CreateServiceOffering(cop)
	if err != nil || !custom.Iscustomized || custom.Cpunumber != 0 || custom.Serviceofferingdetails["maxcpunumber"] != "8" {
		t.Fatalf("createServiceOffering customized: %v %+v", err, custom)
	}
	before := catCount(t, s, (*models.ServiceOffering)(nil), "")
	for name, set := range map[string]func(p *cloudstack.CreateServiceOfferingParams){
		"zero cpus":       func(p *cloudstack.CreateServiceOfferingParams) { p.SetCpunumber(0); p.SetMemory(512) },
		"negative cpus":   func(p *cloudstack.CreateServiceOfferingParams) { p.SetCpunumber(-1); p.SetMemory(512) },
		"memory under 32": func(p *cloudstack.CreateServiceOfferingParams) { p.SetCpunumber(1); p.SetMemory(16) },
		"zero speed":      func(p *cloudstack.CreateServiceOfferingParams) { p.SetCpunumber(1); p.SetMemory(512); p.SetCpuspeed(0) },
		"bad storage type": func(p *cloudstack.CreateServiceOfferingParams) {
			p.SetCpunumber(1)
			p.SetMemory(512)
			p.SetStoragetype("nvme")
		},
		"bad provisioning": func(p *cloudstack.CreateServiceOfferingParams) {
			p.SetCpunumber(1)
			p.SetMemory(512)
			p.SetProvisioningtype("thick")
		},
		"fixed without cpus": func(p *cloudstack.CreateServiceOfferingParams) { p.SetCustomized(false); p.SetMemory(512) },
		"min over max": func(p *cloudstack.CreateServiceOfferingParams) {
			p.SetCustomized(true)
			p.SetMincpunumber(4)
			p.SetMaxcpunumber(2)
		},
		"unknown zone": func(p *cloudstack.CreateServiceOfferingParams) {
			p.SetCpunumber(1)
			p.SetMemory(512)
			p.SetZoneid([]string{models.NewUUID()})
		},
		"qos rate": func(p *cloudstack.CreateServiceOfferingParams) {
			p.SetCpunumber(1)
			p.SetMemory(512)
			p.SetBytesreadrate(1000)
		},
	} {
		p := cs.ServiceOffering.NewCreateServiceOfferingParams("bad", "bad-"+strings.ReplaceAll(name, " ", "-"))
		set(p)
		_, err := cs.ServiceOffering.CreateServiceOffering(p)
		catWant431(t, "createServiceOffering "+name, err)
	}
	if after := catCount(t, s, (*models.ServiceOffering)(nil), ""); after != before {
		t.Fatalf("bad createServiceOffering calls wrote rows: %d -> %d", before, after)
	}

	lsp := cs.ServiceOffering.NewListServiceOfferingsParams()
	sos, err := cs.ServiceOffering.ListServiceOfferings(lsp)
	if err != nil || sos.Count != 4 { // two seeded, two made here
		t.Fatalf("listServiceOfferings: %v %+v", err, sos)
	}
	lsp = cs.ServiceOffering.NewListServiceOfferingsParams()
	lsp.SetCpunumber(2)
	if sos, err = cs.ServiceOffering.ListServiceOfferings(lsp); err != nil || sos.Count != 2 {
		t.Fatalf("listServiceOfferings cpunumber=2 (two-cpu and custom): %v %+v", err, sos)
	}
	lsp = cs.ServiceOffering.NewListServiceOfferingsParams()
	lsp.SetKeyword("TWO")
	if sos, err = cs.ServiceOffering.ListServiceOfferings(lsp); err != nil || sos.Count != 1 || sos.ServiceOfferings[0].Id != so.Id {
		t.Fatalf("listServiceOfferings keyword: %v %+v", err, sos)
	}
	lsp = cs.ServiceOffering.NewListServiceOfferingsParams()
	lsp.SetStoragetype("local")
	if sos, err = cs.ServiceOffering.ListServiceOfferings(lsp); err != nil || sos.Count != 1 {
		t.Fatalf("listServiceOfferings storagetype=local: %v %+v", err, sos)
	}

	usp := cs.ServiceOffering.NewUpdateServiceOfferingParams(so.Id)
	usp.SetName("two-cpu-renamed")
	usp.SetStoragetags("silver")
	usp.SetSortkey(7)
	uso, err := cs.ServiceOffering.UpdateServiceOffering(usp)
	if err != nil || uso.Name != "two-cpu-renamed" || uso.Storagetags != "silver" {
		t.Fatalf("updateServiceOffering: %v %+v", err, uso)
	}
	usp = cs.ServiceOffering.NewUpdateServiceOfferingParams(models.NewUUID())
	usp.SetName("x")
	_, err = cs.ServiceOffering.UpdateServiceOffering(usp)
	catWant431(t, "updateServiceOffering unknown id", err, "unable to find")

	if _, err := cs.ServiceOffering.DeleteServiceOffering(cs.ServiceOffering.NewDeleteServiceOfferingParams(so.Id)); err != nil {
		t.Fatalf("deleteServiceOffering: %v", err)
	}
	var removed models.ServiceOffering
	if err := s.DB.NewSelect().Model(&removed).Where("uuid = ?", so.Id).WhereAllWithDeleted().Scan(context.Background()); err != nil ||
		removed.Removed.IsZero() || removed.State != models.OfferingInactive {
		t.Fatalf("deleted offering row: %v %+v", err, removed)
	}
	if sos, err = cs.ServiceOffering.ListServiceOfferings(cs.ServiceOffering.NewListServiceOfferingsParams()); err != nil || sos.Count != 3 {
		t.Fatalf("listServiceOfferings after delete: %v %+v", err, sos)
	}
	_, err = cs.ServiceOffering.DeleteServiceOffering(cs.ServiceOffering.NewDeleteServiceOfferingParams(so.Id))
	catWant431(t, "deleteServiceOffering twice", err)

	// Disk offerings: the compute offerings' own disk parts never show.
	dop := cs.DiskOffering.NewCreateDiskOfferingParams("Fifty", "fifty")
	dop.SetDisksize(50)
	dop.SetTags("gold")
	dop.SetMiniops(100)
	dop.SetMaxiops(500)
	dop.SetProvisioningtype("sparse")
	do, err := cs.DiskOffering.CreateDiskOffering(dop)
	if err != nil || do.Disksize != 50 || do.Tags != "gold" || do.Miniops != 100 || do.Maxiops != 500 || do.Provisioningtype != "sparse" || do.Iscustomized {
		t.Fatalf("createDiskOffering: %v %+v", err, do)
	}
	dop = cs.DiskOffering.NewCreateDiskOfferingParams("Any size", "anysize")
	dop.SetCustomized(true)
	if anyDo, err := cs.DiskOffering.CreateDiskOffering(dop); err != nil || !anyDo.Iscustomized || anyDo.Disksize != 0 {
		t.Fatalf("createDiskOffering customized: %v %+v", err, anyDo)
	}
	beforeDisks := catCount(t, s, (*models.DiskOffering)(nil), "")
	for name, set := range map[string]func(p *cloudstack.CreateDiskOfferingParams){
		"no size":           func(p *cloudstack.CreateDiskOfferingParams) {},
		"zero size":         func(p *cloudstack.CreateDiskOfferingParams) { p.SetDisksize(0) },
		"size and custom":   func(p *cloudstack.CreateDiskOfferingParams) { p.SetDisksize(5); p.SetCustomized(true) },
		"huge":              func(p *cloudstack.CreateDiskOfferingParams) { p.SetDisksize(1 << 40) },
		"min iops over max": func(p *cloudstack.CreateDiskOfferingParams) { p.SetDisksize(5); p.SetMiniops(10); p.SetMaxiops(5) },
		"bad cache mode":    func(p *cloudstack.CreateDiskOfferingParams) { p.SetDisksize(5); p.SetCachemode("always") },
	} {
		p := cs.DiskOffering.NewCreateDiskOfferingParams("bad", "bad-"+strings.ReplaceAll(name, " ", "-"))
		set(p)
		_, err := cs.DiskOffering.CreateDiskOffering(p)
		catWant431(t, "createDiskOffering "+name, err)
	}
	if after := catCount(t, s, (*models.DiskOffering)(nil), ""); after != beforeDisks {
		t.Fatalf("bad createDiskOffering calls wrote rows: %d -> %d", beforeDisks, after)
	}
	dos, err := cs.DiskOffering.ListDiskOfferings(cs.DiskOffering.NewListDiskOfferingsParams())
	if err != nil || dos.Count != 6 { // four seeded, two made here
		t.Fatalf("listDiskOfferings: %v %+v", err, dos)
	}
	udp := cs.DiskOffering.NewUpdateDiskOfferingParams(do.Id)
	udp.SetDisplaytext("Fifty gigabytes")
	udp.SetTags("platinum")
	ud, err := cs.DiskOffering.UpdateDiskOffering(udp)
	if err != nil || ud.Displaytext != "Fifty gigabytes" || ud.Tags != "platinum" || ud.Disksize != 50 {
		t.Fatalf("updateDiskOffering: %v %+v", err, ud)
	}
	if _, err := cs.DiskOffering.DeleteDiskOffering(cs.DiskOffering.NewDeleteDiskOfferingParams(do.Id)); err != nil {
		t.Fatalf("deleteDiskOffering: %v", err)
	}
	ldp := cs.DiskOffering.NewListDiskOfferingsParams()
	ldp.SetId(do.Id)
	if dos, err = cs.DiskOffering.ListDiskOfferings(ldp); err != nil || dos.Count != 0 {
		t.Fatalf("listDiskOfferings after delete: %v %+v", err, dos)
	}

	// Network offerings: the seeded shared one with its services.
	nos, err := cs.NetworkOffering.ListNetworkOfferings(cs.NetworkOffering.NewListNetworkOfferingsParams())
	if err != nil || nos.Count != 1 || nos.NetworkOfferings[0].Name != models.NetworkOfferingDefaultSharedName ||
		nos.NetworkOfferings[0].Guestiptype != "Shared" || len(nos.NetworkOfferings[0].Service) != 3 {
		t.Fatalf("listNetworkOfferings: %v %+v", err, nos)
	}
	np := cs.NetworkOffering.NewListNetworkOfferingsParams()
	np.SetGuestiptype("Isolated")
	if nos, err = cs.NetworkOffering.ListNetworkOfferings(np); err != nil || nos.Count != 0 {
		t.Fatalf("listNetworkOfferings Isolated: %v %+v", err, nos)
	}
}

// catImageServer serves one file over HTTP, slowly when delay > 0 (chunk
// bytes per delay), with ranges and an ETag so interrupted downloads can
// resume, and counts requests.
type catImageServer struct {
	data     []byte
	chunk    int
	delay    time.Duration
	requests atomic.Int32
	ranged   atomic.Int32 // requests answered from an offset (resumed)
	srv      *httptest.Server
}

func newCatImageServer(t *testing.T, size, chunk int, delay time.Duration) *catImageServer {
	t.Helper()
	s := &catImageServer{data: make([]byte, size), chunk: chunk, delay: delay}
	if _, err := rand.Read(s.data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(s.data)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if !strings.HasSuffix(r.URL.Path, "/image.raw") && !strings.HasSuffix(r.URL.Path, "/image.iso") {
			http.NotFound(w, r)
			return
		}
		start := 0
		if rg := r.Header.Get("Range"); rg != "" && (r.Header.Get("If-Range") == "" || r.Header.Get("If-Range") == etag) {
			fmt.Sscanf(rg, "bytes=%d-", &start)
		}
		w.Header().Set("ETag", etag)
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("Content-Length", strconv.Itoa(len(s.data)-start))
		if start > 0 {
			s.ranged.Add(1)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(s.data)-1, len(s.data)))
			w.WriteHeader(http.StatusPartialContent)
		}
		for off := start; off < len(s.data); off += s.chunk {
			end := min(off+s.chunk, len(s.data))
			if _, err := w.Write(s.data[off:end]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			if s.delay > 0 {
				select {
				case <-time.After(s.delay):
				case <-r.Context().Done():
					return
				}
			}
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *catImageServer) sha256() string {
	sum := sha256.Sum256(s.data)
	return "{SHA-256}" + hex.EncodeToString(sum[:])
}

// catZone makes a zone with a local-directory image store (addImageStore,
// provider NFS with a file:// URL) and returns the zone and the store's
// directory.
func catZone(t *testing.T, s *testenv.Stack, name string) (*cloudstack.CreateZoneResponse, string) {
	t.Helper()
	cs := s.Client
	z, err := cs.Zone.CreateZone(cs.Zone.NewCreateZoneParams("8.8.8.8", "10.0.0.2", name, "Advanced"))
	if err != nil {
		t.Fatalf("createZone %s: %v", name, err)
	}
	dir := filepath.Join(s.Dir, "secondary-"+name)
	ip := cs.ImageStore.NewAddImageStoreParams("NFS")
	ip.SetName("sec-" + name)
	ip.SetUrl("file://" + dir)
	ip.SetZoneid(z.Id)
	if _, err := cs.ImageStore.AddImageStore(ip); err != nil {
		t.Fatalf("addImageStore in %s: %v", name, err)
	}
	return z, dir
}

// catFiles lists the regular files under dir (relative paths).
func catFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// catTemplate reads one template entry (templatefilter=all as the admin).
func catTemplate(t *testing.T, cs *cloudstack.CloudStackClient, id, zoneID string) *cloudstack.Template {
	t.Helper()
	p := cs.Template.NewListTemplatesParams("all")
	p.SetId(id)
	if zoneID != "" {
		p.SetZoneid(zoneID)
	}
	r, err := cs.Template.ListTemplates(p)
	if err != nil {
		t.Fatalf("listTemplates id=%s: %v", id, err)
	}
	if r.Count != 1 {
		t.Fatalf("listTemplates id=%s: %d entries", id, r.Count)
	}
	return r.Templates[0]
}

// catWaitTemplate polls until done says the entry is final, recording the
// statuses seen on the way.
func catWaitTemplate(t *testing.T, cs *cloudstack.CloudStackClient, id string, timeout time.Duration, done func(*cloudstack.Template) bool) (*cloudstack.Template, []string) {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(timeout)
	for {
		tm := catTemplate(t, cs, id, "")
		if len(seen) == 0 || seen[len(seen)-1] != tm.Status {
			seen = append(seen, tm.Status)
		}
		if done(tm) {
			return tm, seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("template %s: still %q after %v (statuses seen: %q)", id, tm.Status, timeout, seen)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// catJob waits for a job and returns it.
func catJob(t *testing.T, cs *cloudstack.CloudStackClient, jobID string, timeout time.Duration) *cloudstack.QueryAsyncJobResultResponse {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r, err := cs.Asyncjob.QueryAsyncJobResult(cs.Asyncjob.NewQueryAsyncJobResultParams(jobID))
		if err != nil {
			t.Fatalf("queryAsyncJobResult %s: %v", jobID, err)
		}
		if r.Jobstatus != 0 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still pending after %v", jobID, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type catUser struct {
	AccountID string
	Client    *cloudstack.CloudStackClient
}

func catCreateUser(t *testing.T, s *testenv.Stack, name string) *catUser {
	t.Helper()
	cs := s.Client
	p := cs.Account.NewCreateAccountParams(name+"@example.com", "First", "Last", "pw-"+name, name)
	p.SetAccounttype(models.AccountTypeUser)
	a, err := cs.Account.CreateAccount(p)
	if err != nil {
		t.Fatalf("createAccount %s: %v", name, err)
	}
	keys, err := cs.User.RegisterUserKeys(cs.User.NewRegisterUserKeysParams(a.User[0].Id))
	if err != nil {
		t.Fatalf("registerUserKeys %s: %v", name, err)
	}
	c := cloudstack.NewAsyncClient(s.APIURL, keys.Apikey, keys.Secretkey, false)
	c.AsyncTimeout(120)
	return &catUser{AccountID: a.Id, Client: c}
}

func catTemplateIDs(t *testing.T, cs *cloudstack.CloudStackClient, filter string) []string {
	t.Helper()
	r, err := cs.Template.ListTemplates(cs.Template.NewListTemplatesParams(filter))
	if err != nil {
		t.Fatalf("listTemplates %s: %v", filter, err)
	}
	var ids []string
	for _, tm := range r.Templates {
		ids = append(ids, tm.Name)
	}
	sort.Strings(ids)
	return ids
}

func TestCatalogTemplates(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	ctx := context.Background()
	zone, dir := catZone(t, s, "zone1")

	// A 4 MiB image served in 128 KiB chunks every 120 ms: about 4 s.
	img := newCatImageServer(t, 4<<20, 128<<10, 120*time.Millisecond)
	rp := cs.Template.NewRegisterTemplateParams("Debian 12", "RAW", "KVM", "debian12", img.srv.URL+"/image.raw")
	rp.SetZoneid(zone.Id)
	rp.SetOstypeid(models.OSTypeOtherLinux64UUID)
	rp.SetChecksum(img.sha256())
	rp.SetPasswordenabled(true)
	reg, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate: %v", err)
	}
	if reg.Count != 1 || len(reg.RegisterTemplate) != 1 {
		t.Fatalf("registerTemplate answered %+v", reg)
	}
	tm := reg.RegisterTemplate[0]
	if tm.Name != "debian12" || tm.Format != "RAW" || tm.Hypervisor != "KVM" || tm.Isready || tm.Zoneid != zone.Id ||
		tm.Ostypeid != models.OSTypeOtherLinux64UUID || !tm.Passwordenabled || tm.Templatetype != "USER" || tm.JobID == "" {
		t.Fatalf("registered template = %+v", tm)
	}
	final, seen := catWaitTemplate(t, cs, tm.Id, 60*time.Second, func(x *cloudstack.Template) bool { return x.Isready })
	progress := 0
	for _, st := range seen {
		if strings.HasSuffix(st, "% Downloaded") {
			progress++
		}
	}
	if progress < 2 {
		t.Errorf("progress did not show moving: statuses seen %q", seen)
	}
	t.Logf("statuses seen while downloading: %q", seen)
	if final.Status != "Download Complete" || final.Size != int64(len(img.data)) || final.Physicalsize != int64(len(img.data)) ||
		len(final.Downloaddetails) != 1 || final.Downloaddetails[0]["downloadState"] != "DOWNLOADED" {
		t.Fatalf("downloaded template = %+v", final)
	}
	files := catFiles(t, dir)
	if len(files) != 1 || !strings.HasSuffix(files[0], tm.Id+".raw") {
		t.Fatalf("image store holds %q", files)
	}
	if got, err := os.ReadFile(filepath.Join(dir, files[0])); err != nil || !bytes.Equal(got, img.data) {
		t.Fatalf("stored file differs from the served one (%v)", err)
	}
	job := catJob(t, cs, tm.JobID, 10*time.Second)
	if job.Jobstatus != 1 || job.Jobinstancetype != "Template" || job.Jobinstanceid != tm.Id || !strings.Contains(string(job.Jobresult), tm.Id) {
		t.Fatalf("register job = %+v %s", job, job.Jobresult)
	}

	// A bad checksum fails clearly and leaves nothing in the store.
	wrong := sha256.Sum256([]byte("something else"))
	rp = cs.Template.NewRegisterTemplateParams("bad sum", "RAW", "KVM", "badsum", img.srv.URL+"/image.raw")
	rp.SetZoneid(zone.Id)
	rp.SetChecksum(hex.EncodeToString(wrong[:]))
	bad, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate bad checksum: %v", err)
	}
	// Generous: the failure is reported in seconds, but a loaded Temporal dev
	// server has been seen to take over a minute to take the failed attempt.
	badJob := catJob(t, cs, bad.RegisterTemplate[0].JobID, 3*time.Minute)
	if badJob.Jobstatus != 2 || !strings.Contains(string(badJob.Jobresult), "checksum mismatch") {
		t.Fatalf("bad checksum job = %+v %s", badJob, badJob.Jobresult)
	}
	badTm := catTemplate(t, cs, bad.RegisterTemplate[0].Id, "")
	if badTm.Isready || !strings.Contains(badTm.Status, "checksum mismatch") || badTm.Downloaddetails[0]["downloadState"] != "DOWNLOAD_ERROR" {
		t.Fatalf("bad checksum template = %+v", badTm)
	}
	if files := catFiles(t, dir); len(files) != 1 {
		t.Fatalf("after a bad checksum the store holds %q", files)
	}

	// An unreachable URL fails after bounded retries.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String() + "/image.raw"
	ln.Close()
	rp = cs.Template.NewRegisterTemplateParams("gone", "RAW", "KVM", "unreachable", deadURL)
	rp.SetZoneid(zone.Id)
	started := time.Now()
	dead, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate unreachable: %v", err)
	}
	deadJob := catJob(t, cs, dead.RegisterTemplate[0].JobID, 90*time.Second)
	if deadJob.Jobstatus != 2 || !strings.Contains(string(deadJob.Jobresult), "unreachable") {
		t.Fatalf("unreachable job = %+v %s", deadJob, deadJob.Jobresult)
	}
	t.Logf("unreachable URL failed after %v", time.Since(started).Round(time.Second))
	if st := catTemplate(t, cs, dead.RegisterTemplate[0].Id, "").Downloaddetails[0]["downloadState"]; st != "DOWNLOAD_ERROR" {
		t.Fatalf("unreachable template state %s", st)
	}

	// A missing file (404) fails at once.
	rp = cs.Template.NewRegisterTemplateParams("missing", "RAW", "KVM", "missing", img.srv.URL+"/nothing.raw")
	rp.SetZoneid(zone.Id)
	missing, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate 404: %v", err)
	}
	if j := catJob(t, cs, missing.RegisterTemplate[0].JobID, 30*time.Second); j.Jobstatus != 2 || !strings.Contains(string(j.Jobresult), "404") {
		t.Fatalf("404 job = %+v %s", j, j.Jobresult)
	}

	// Validation: clear 431s, nothing written.
	before := catCount(t, s, (*models.Template)(nil), "")
	for name, p := range map[string]*cloudstack.RegisterTemplateParams{
		"format not for hypervisor": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "OVA", "KVM", "x", img.srv.URL+"/image.raw")
			p.SetZoneid(zone.Id)
			return p
		}(),
		"unknown format": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "FLOPPY", "KVM", "x", img.srv.URL+"/image.raw")
			p.SetZoneid(zone.Id)
			return p
		}(),
		"unknown hypervisor": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "RAW", "Bochs", "x", img.srv.URL+"/image.raw")
			p.SetZoneid(zone.Id)
			return p
		}(),
		"unknown os type": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "RAW", "KVM", "x", img.srv.URL+"/image.raw")
			p.SetZoneid(zone.Id)
			p.SetOstypeid(models.NewUUID())
			return p
		}(),
		"ftp url": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "RAW", "KVM", "x", "ftp://example.com/image.raw")
			p.SetZoneid(zone.Id)
			return p
		}(),
		"not a url": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "RAW", "KVM", "x", "image.raw")
			p.SetZoneid(zone.Id)
			return p
		}(),
		"unknown zone": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "RAW", "KVM", "x", img.srv.URL+"/image.raw")
			p.SetZoneid(models.NewUUID())
			return p
		}(),
		"no zone": cs.Template.NewRegisterTemplateParams("x", "RAW", "KVM", "x", img.srv.URL+"/image.raw"),
		"bad checksum form": func() *cloudstack.RegisterTemplateParams {
			p := cs.Template.NewRegisterTemplateParams("x", "RAW", "KVM", "x", img.srv.URL+"/image.raw")
			p.SetZoneid(zone.Id)
			p.SetChecksum("{SHA-256}abc")
			return p
		}(),
	} {
		_, err := cs.Template.RegisterTemplate(p)
		catWant431(t, "registerTemplate "+name, err)
	}
	if after := catCount(t, s, (*models.Template)(nil), ""); after != before {
		t.Fatalf("bad registerTemplate calls wrote rows: %d -> %d", before, after)
	}

	// ISOs: sync register, job download, listIsos.
	isoSrv := newCatImageServer(t, 1<<20, 256<<10, 0)
	ip := cs.ISO.NewRegisterIsoParams("Rescue ISO", "rescue", isoSrv.srv.URL+"/image.iso", zone.Id)
	ip.SetChecksum(isoSrv.sha256())
	ip.SetIspublic(true)
	iso, err := cs.ISO.RegisterIso(ip)
	if err != nil || iso.Name != "rescue" || iso.Format != "ISO" || !iso.Bootable || iso.Zoneid != zone.Id {
		t.Fatalf("registerIso: %v %+v", err, iso)
	}
	if j := catJob(t, cs, iso.JobID, 30*time.Second); j.Jobstatus != 1 || j.Jobinstancetype != "Iso" {
		t.Fatalf("registerIso job = %+v %s", j, j.Jobresult)
	}
	lip := cs.ISO.NewListIsosParams()
	lip.SetIsofilter("self")
	isos, err := cs.ISO.ListIsos(lip)
	if err != nil || isos.Count != 1 || !isos.Isos[0].Isready || isos.Isos[0].Size != int64(len(isoSrv.data)) {
		t.Fatalf("listIsos: %v %+v", err, isos)
	}
	if tl := catTemplateIDs(t, cs, "self"); strings.Contains(strings.Join(tl, ","), "rescue") {
		t.Fatalf("listTemplates shows the ISO: %q", tl)
	}

	// Visibility: the admin's template made public and featured; a user's own.
	upp := cs.Template.NewUpdateTemplatePermissionsParams(tm.Id)
	upp.SetIspublic(true)
	upp.SetIsfeatured(true)
	if _, err := cs.Template.UpdateTemplatePermissions(upp); err != nil {
		t.Fatalf("updateTemplatePermissions: %v", err)
	}
	alice := catCreateUser(t, s, "alice")
	ap := alice.Client.Template.NewRegisterTemplateParams("alice's", "RAW", "KVM", "alice-tmpl", isoSrv.srv.URL+"/image.iso")
	ap.SetZoneid(zone.Id)
	aliceTm, err := alice.Client.Template.RegisterTemplate(ap)
	if err != nil || aliceTm.RegisterTemplate[0].Account != "alice" {
		t.Fatalf("alice registerTemplate: %v %+v", err, aliceTm)
	}
	catWaitTemplate(t, cs, aliceTm.RegisterTemplate[0].Id, 30*time.Second, func(x *cloudstack.Template) bool { return x.Isready })
	ap = alice.Client.Template.NewRegisterTemplateParams("featured?", "QCOW2", "KVM", "alice-featured", isoSrv.srv.URL+"/image.iso")
	ap.SetZoneid(zone.Id)
	ap.SetIsfeatured(true)
	_, err = alice.Client.Template.RegisterTemplate(ap)
	catWant431(t, "user registers a featured template", err, "featured")
	for filter, want := range map[string]string{
		"featured":       "debian12",
		"self":           "alice-tmpl",
		"selfexecutable": "alice-tmpl",
		"executable":     "alice-tmpl,debian12",
		"community":      "",
	} {
		if got := strings.Join(catTemplateIDs(t, alice.Client, filter), ","); got != want {
			t.Errorf("alice templatefilter=%s: %q, want %q", filter, got, want)
		}
	}
	_, err = alice.Client.Template.ListTemplates(alice.Client.Template.NewListTemplatesParams("all"))
	catWant431(t, "user templatefilter=all", err, "admin")
	if got := catTemplateIDs(t, cs, "all"); len(got) != 5 { // debian12, badsum, unreachable, missing, alice-tmpl
		t.Errorf("admin templatefilter=all: %q", got)
	}
	if got := catTemplateIDs(t, cs, "self"); strings.Contains(strings.Join(got, ","), "alice") {
		t.Errorf("admin templatefilter=self shows alice's: %q", got)
	}
	aup := alice.Client.Template.NewUpdateTemplateParams(tm.Id)
	aup.SetName("stolen")
	_, err = alice.Client.Template.UpdateTemplate(aup)
	if err == nil || !strings.Contains(err.Error(), "531") {
		t.Errorf("alice updates the admin's template: want 531, got %v", err)
	}

	// updateTemplate answers the template (nested and at the top level).
	up := cs.Template.NewUpdateTemplateParams(tm.Id)
	up.SetName("debian12-renamed")
	up.SetOstypeid(models.OSTypeOther64UUID)
	upd, err := cs.Template.UpdateTemplate(up)
	if err != nil || upd.Name != "debian12-renamed" || upd.Ostypeid != models.OSTypeOther64UUID || !upd.Isready {
		t.Fatalf("updateTemplate: %v %+v", err, upd)
	}
	up = cs.Template.NewUpdateTemplateParams(tm.Id)
	up.SetFormat("OVA")
	_, err = cs.Template.UpdateTemplate(up)
	catWant431(t, "updateTemplate format not for KVM", err, "OVA")

	// extractTemplate answers a signed link that serves the file.
	ext, err := cs.Template.ExtractTemplate(cs.Template.NewExtractTemplateParams(tm.Id, "HTTP_DOWNLOAD"))
	if err != nil || ext.Url == "" || ext.Zoneid != zone.Id || ext.Id != tm.Id {
		t.Fatalf("extractTemplate: %v %+v", err, ext)
	}
	resp, err := http.Get(ext.Url)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, img.data) {
		t.Fatalf("extract link: %s, %d bytes", resp.Status, len(got))
	}
	if resp, err := http.Get(ext.Url[:len(ext.Url)-4] + "AAAA"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("tampered extract link: %v %v", err, resp)
	}
	_, err = alice.Client.Template.ExtractTemplate(alice.Client.Template.NewExtractTemplateParams(tm.Id, "HTTP_DOWNLOAD"))
	catWant431(t, "alice extracts a non-extractable template", err, "extractable")

	// copyTemplate to a second zone.
	zone2, dir2 := catZone(t, s, "zone2")
	cp := cs.Template.NewCopyTemplateParams(tm.Id)
	cp.SetDestzoneid(zone2.Id)
	cp.SetSourcezoneid(zone.Id)
	copied, err := cs.Template.CopyTemplate(cp)
	if err != nil || copied.Zoneid != zone2.Id || !copied.Isready {
		t.Fatalf("copyTemplate: %v %+v", err, copied)
	}
	if f := catFiles(t, dir2); len(f) != 1 {
		t.Fatalf("zone2 store holds %q", f)
	}
	lp := cs.Template.NewListTemplatesParams("all")
	lp.SetId(tm.Id)
	if l, err := cs.Template.ListTemplates(lp); err != nil || l.Count != 2 {
		t.Fatalf("listTemplates after copy: %v %+v", err, l)
	}

	// deleteTemplate: refused while a VM uses it, then per zone, then all.
	var trow models.Template
	if err := s.DB.NewSelect().Model(&trow).Where("uuid = ?", tm.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	var acct models.Account
	if err := s.DB.NewSelect().Model(&acct).Where("uuid = ?", models.AdminAccountUUID).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	var zrow models.Zone
	if err := s.DB.NewSelect().Model(&zrow).Where("uuid = ?", zone.Id).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	vm := &models.VMInstance{UUID: models.NewUUID(), Name: "vm1", InstanceName: "i-2-1-VM", Type: "User", State: "Running",
		ZoneID: zrow.ID, TemplateID: trow.ID, ServiceOfferingID: 1, CPU: 1, Speed: 500, RAMSize: 512,
		AccountID: acct.ID, DomainID: acct.DomainID, Created: models.Now()}
	if _, err := s.DB.NewInsert().Model(vm).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = cs.Template.DeleteTemplate(cs.Template.NewDeleteTemplateParams(tm.Id))
	catWant431(t, "deleteTemplate in use", err, vm.UUID, "forced")
	if _, err := s.DB.NewDelete().Model(vm).WherePK().ForceDelete().Exec(ctx); err != nil {
		t.Fatal(err)
	}
	dp := cs.Template.NewDeleteTemplateParams(tm.Id)
	dp.SetZoneid(zone2.Id)
	if _, err := cs.Template.DeleteTemplate(dp); err != nil {
		t.Fatalf("deleteTemplate zone2: %v", err)
	}
	if f := catFiles(t, dir2); len(f) != 0 {
		t.Fatalf("zone2 store still holds %q", f)
	}
	if tmz := catTemplate(t, cs, tm.Id, ""); tmz.Zoneid != zone.Id {
		t.Fatalf("after deleting from zone2: %+v", tmz)
	}
	if _, err := cs.Template.DeleteTemplate(cs.Template.NewDeleteTemplateParams(tm.Id)); err != nil {
		t.Fatalf("deleteTemplate: %v", err)
	}
	for _, f := range catFiles(t, dir) {
		if strings.Contains(f, tm.Id) {
			t.Fatalf("zone1 store still holds %s", f)
		}
	}
	lp = cs.Template.NewListTemplatesParams("all")
	lp.SetId(tm.Id)
	if l, err := cs.Template.ListTemplates(lp); err != nil || l.Count != 0 {
		t.Fatalf("listTemplates after delete: %v %+v", err, l)
	}
	if err := s.DB.NewSelect().Model(&trow).Where("uuid = ?", tm.Id).WhereAllWithDeleted().Scan(ctx); err != nil || trow.Removed.IsZero() || trow.State != models.TemplateInactive {
		t.Fatalf("deleted template row: %v %+v", err, trow)
	}
	// Deleting a template while it downloads stops the download and leaves
	// no file, partial or whole.
	rp = cs.Template.NewRegisterTemplateParams("short-lived", "RAW", "KVM", "short-lived", img.srv.URL+"/image.raw")
	rp.SetZoneid(zone.Id)
	short, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate: %v", err)
	}
	shortID := short.RegisterTemplate[0].Id
	catWaitTemplate(t, cs, shortID, 30*time.Second, func(x *cloudstack.Template) bool { return strings.HasSuffix(x.Status, "% Downloaded") })
	if _, err := cs.Template.DeleteTemplate(cs.Template.NewDeleteTemplateParams(shortID)); err != nil {
		t.Fatalf("deleteTemplate while downloading: %v", err)
	}
	if j := catJob(t, cs, short.RegisterTemplate[0].JobID, 30*time.Second); j.Jobstatus != 2 {
		t.Fatalf("register job of a deleted template: %+v %s", j, j.Jobresult)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left := ""
		for _, f := range catFiles(t, dir) {
			if strings.Contains(f, shortID) {
				left = f
			}
		}
		if left == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deleted template's file stays: %s", left)
		}
	}

	if _, err := cs.ISO.DeleteIso(cs.ISO.NewDeleteIsoParams(iso.Id)); err != nil {
		t.Fatalf("deleteIso: %v", err)
	}
	if isos, err := cs.ISO.ListIsos(lip); err != nil || isos.Count != 0 {
		t.Fatalf("listIsos after delete: %v %+v", err, isos)
	}
}

// TestCatalogTemplateWorkerKill kills the worker in the middle of a slow
// download; a new worker finishes it with one file and no duplicate rows.
func TestCatalogTemplateWorkerKill(t *testing.T) {
	s := testenv.StartStack(t, testenv.StackOptions{})
	cs := s.Client
	zone, dir := catZone(t, s, "zone1")
	// 6 MiB at about 1 MiB/s.
	img := newCatImageServer(t, 6<<20, 64<<10, 60*time.Millisecond)
	rp := cs.Template.NewRegisterTemplateParams("slow", "RAW", "KVM", "slow", img.srv.URL+"/image.raw")
	rp.SetZoneid(zone.Id)
	rp.SetChecksum(img.sha256())
	reg, err := cs.Template.RegisterTemplate(rp)
	if err != nil {
		t.Fatalf("registerTemplate: %v", err)
	}
	id := reg.RegisterTemplate[0].Id
	catWaitTemplate(t, cs, id, 30*time.Second, func(x *cloudstack.Template) bool {
		var pct int
		_, err := fmt.Sscanf(x.Status, "%d%% Downloaded", &pct)
		return err == nil && pct >= 15
	})
	s.Workers()[0].Kill()
	t.Logf("worker killed mid-download; files: %q", catFiles(t, dir))
	s.StartWorker()
	final, seen := catWaitTemplate(t, cs, id, 120*time.Second, func(x *cloudstack.Template) bool {
		return x.Isready || strings.Contains(x.Status, "rror")
	})
	if !final.Isready || final.Size != int64(len(img.data)) {
		t.Fatalf("after the restart: %+v (statuses %q)", final, seen)
	}
	files := catFiles(t, dir)
	if len(files) != 1 || !strings.HasSuffix(files[0], id+".raw") {
		t.Fatalf("image store holds %q, want one file", files)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, files[0])); !bytes.Equal(got, img.data) {
		t.Fatal("stored file differs from the served one")
	}
	var trow models.Template
	if err := s.DB.NewSelect().Model(&trow).Where("uuid = ?", id).Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := catCount(t, s, (*models.TemplateStoreRef)(nil), "template_id = ?", trow.ID); n != 1 {
		t.Fatalf("%d store refs, want 1", n)
	}
	if n := catCount(t, s, (*models.TemplateZoneRef)(nil), "template_id = ?", trow.ID); n != 1 {
		t.Fatalf("%d zone refs, want 1", n)
	}
	if n := catCount(t, s, (*models.Template)(nil), ""); n != 1 {
		t.Fatalf("%d templates, want 1", n)
	}
	if j := catJob(t, cs, reg.RegisterTemplate[0].JobID, 10*time.Second); j.Jobstatus != 1 {
		t.Fatalf("job after the restart: %+v %s", j, j.Jobresult)
	}
	if img.ranged.Load() == 0 {
		t.Errorf("the download started over instead of resuming (%d requests)", img.requests.Load())
	}
}
