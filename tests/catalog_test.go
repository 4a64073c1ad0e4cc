package tests

import (
	"context"
	"strings"
	"testing"

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
	n, err := q.WhereAllWithDeleted().Count(context.Background())
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
