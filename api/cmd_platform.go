package api

import (
	"context"
	"os"
	"runtime"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/models"
)

// CloudStackVersion is the CloudStack API level Nimbus speaks, as
// listCapabilities reports it.
const CloudStackVersion = "4.20.0-nimbus"

func init() {
	Register(
		&Command{
			Name: "listCapabilities", Description: "Lists capabilities", Access: AccessAll,
			ResponseName: "capability", Response: capabilityFields, Handler: listCapabilities,
		},
		&Command{
			Name: "listManagementServersMetrics", Description: "Lists management servers with metrics", Access: AccessRootAdmin,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the management server"},
				Param{Name: "name", Type: TString, Description: "the management server's name"},
				Param{Name: "system", Type: TBoolean, Description: "include system metrics"},
			),
			ResponseName: "managementserver", Response: msFields, Handler: listManagementServersMetrics,
		},
		&Command{
			Name: "listEvents", Description: "A command to list events", Access: AccessAll,
			Params: append(OwnerListParams(),
				Param{Name: "id", Type: TUUID, Description: "the event"},
				Param{Name: "type", Type: TString, Description: "the event type (e.g. ACCOUNT.CREATE)"},
				Param{Name: "level", Type: TString, Description: "the event level (INFO, WARN, ERROR)"},
				Param{Name: "startdate", Type: TDate, Description: "events on or after this date"},
				Param{Name: "enddate", Type: TDate, Description: "events on or before this date"},
				Param{Name: "duration", Type: TInteger, Description: "with entrytime, events still open longer than this many seconds (ignored)"},
				Param{Name: "entrytime", Type: TInteger, Description: "see duration (ignored)"},
				Param{Name: "resourceid", Type: TString, Description: "events of this resource"},
				Param{Name: "resourcetype", Type: TString, Description: "events of this resource type"},
				Param{Name: "startid", Type: TUUID, Description: "the parent event (ignored: events have no parents)"},
				Param{Name: "archived", Type: TBoolean, Description: "list archived events (none are archived)"},
				Param{Name: "projectid", Type: TUUID, Description: "events of this project (ignored until projects exist)"},
			),
			ResponseName: "event", Response: eventFields, Handler: listEvents,
		},
	)
}

// ---- events ----

// tenancyEvent records an event of the caller in tx (the command's
// transaction, so that the event exists exactly when the change does), with
// RecordEvent. Workflows record theirs with the EventRecord activity.
func tenancyEvent(ctx context.Context, tx bun.IDB, caller *Caller, typ, resourceType, resourceUUID, description string) error {
	e := &models.Event{Type: typ, ResourceType: resourceType, ResourceUUID: resourceUUID, Description: description}
	if caller != nil {
		e.UserID, e.AccountID, e.DomainID = caller.User.ID, caller.Account.ID, caller.Domain.ID
	}
	return RecordEvent(ctx, tx, e)
}

var eventFields = []Field{
	{"id", "string", "the ID of the event"},
	{"type", "string", "the type of the event (see listEventTypes)"},
	{"level", "string", "the event level (INFO, WARN, ERROR)"},
	{"state", "string", "the state of the event"},
	{"description", "string", "a brief description of the event"},
	{"created", "date", "the date the event was created"},
	{"username", "string", "the name of the user who performed the action"},
	{"account", "string", "the account name for the account that owns the object being acted on"},
	{"domainid", "string", "the id of the account's domain"},
	{"domain", "string", "the name of the account's domain"},
	{"resourceid", "string", "the id of the resource"},
	{"resourcetype", "string", "the type of the resource"},
	{"archived", "boolean", "whether the event has been archived or not"},
}

// EventView is an event as listEvents shows it (cloudstack-go Event).
type EventView struct {
	ID           string `json:"id"`
	Type         string `json:"type"`
	Level        string `json:"level"`
	State        string `json:"state"`
	Description  string `json:"description"`
	Created      string `json:"created"`
	Username     string `json:"username,omitempty"`
	Account      string `json:"account,omitempty"`
	DomainID     string `json:"domainid,omitempty"`
	Domain       string `json:"domain,omitempty"`
	ResourceID   string `json:"resourceid,omitempty"`
	ResourceType string `json:"resourcetype,omitempty"`
	Archived     bool   `json:"archived"`
}

func listEvents(c *Call) (any, error) {
	scope, err := c.Visibility()
	if err != nil {
		return nil, err
	}
	var evs []models.Event
	q := c.S.DB.NewSelect().Model(&evs).Apply(scope.Modifier("event.account_id", "event.domain_id"))
	if c.Has("type") {
		q = q.Where("event.type = ?", c.Str("type"))
	}
	if c.Has("level") {
		q = q.Where("UPPER(event.level) = UPPER(?)", c.Str("level"))
	}
	if c.Has("resourceid") {
		q = q.Where("event.resource_uuid = ?", c.Str("resourceid"))
	}
	if c.Has("resourcetype") {
		q = q.Where("LOWER(event.resource_type) = LOWER(?)", c.Str("resourcetype"))
	}
	if c.Has("startdate") {
		t, _ := ParseDate(c.Str("startdate"))
		q = q.Where("event.created >= ?", t)
	}
	if c.Has("enddate") {
		q = q.Where("event.created < ?", endOf(c.Str("enddate")))
	}
	if c.Bool("archived", false) {
		q = q.Where("1 = 0") // nothing is archived
	}
	q = c.Filtered(q, Filter{ID: "event.uuid", Keyword: []string{"event.type", "event.description"}}).
		OrderExpr("event.created DESC, event.id DESC")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	var userIDs, acctIDs []int64
	for _, e := range evs {
		userIDs = append(userIDs, e.UserID)
		acctIDs = append(acctIDs, e.AccountID)
	}
	owners, err := loadOwners(c.Ctx, c.S.DB, acctIDs)
	if err != nil {
		return nil, err
	}
	names := map[int64]string{}
	if len(userIDs) > 0 {
		var us []models.User
		if err := c.S.DB.NewSelect().Model(&us).Column("id", "username").Where("id IN (?)", bun.List(userIDs)).WhereAllWithDeleted().Scan(c.Ctx); err != nil {
			return nil, err
		}
		for _, u := range us {
			names[u.ID] = u.Username
		}
	}
	views := make([]EventView, 0, len(evs))
	for _, e := range evs {
		v := EventView{ID: e.UUID, Type: e.Type, Level: e.Level, State: e.State, Description: e.Description,
			Created: FormatTime(e.Created), Username: names[e.UserID], ResourceID: e.ResourceUUID, ResourceType: e.ResourceType}
		if o := owners[e.AccountID]; o != nil {
			v.Account, v.DomainID, v.Domain = o.Account.Name, o.Domain.UUID, o.Domain.Name
		}
		views = append(views, v)
	}
	return List{Key: "event", Count: n, Items: views}, nil
}

// endOf is the exclusive end of an enddate: the next second, or the next day
// for a bare date.
func endOf(v string) time.Time {
	t, _ := ParseDate(v)
	if len(v) == len("2006-01-02") {
		return t.Add(24 * time.Hour)
	}
	return t.Add(time.Second)
}

// ---- capabilities ----

var capabilityFields = []Field{
	{"cloudstackversion", "string", "version of the cloud stack"},
	{"securitygroupsenabled", "boolean", "true if security groups support is enabled, false otherwise"},
	{"userpublictemplateenabled", "boolean", "true if user and domain admins can set templates to be shared, false otherwise"},
	{"kvmsnapshotenabled", "boolean", "true if snapshot is supported for KVM host, false otherwise"},
	{"apilimitinterval", "integer", "time interval (in seconds) to reset api count"},
	{"apilimitmax", "integer", "max allowed number of api requests within the specified interval"},
	{"allowusercreateprojects", "boolean", "true if regular user is allowed to create projects"},
	{"customdiskofferingmaxsize", "long", "maximum size that can be specified when create disk from disk offering with custom size"},
	{"customdiskofferingminsize", "long", "minimum size that can be specified when create disk from disk offering with custom size"},
	{"dynamicrolesenabled", "boolean", "true if dynamic role-based api checker is enabled, false otherwise"},
	{"defaultuipagesize", "long", "default page size in the UI for various views"},
}

// Capability is listCapabilities' answer (cloudstack-go Capability).
type Capability struct {
	CloudStackVersion                            string `json:"cloudstackversion"`
	SecurityGroupsEnabled                        bool   `json:"securitygroupsenabled"`
	UserPublicTemplateEnabled                    bool   `json:"userpublictemplateenabled"`
	KVMSnapshotEnabled                           bool   `json:"kvmsnapshotenabled"`
	APILimitInterval                             int    `json:"apilimitinterval"`
	APILimitMax                                  int    `json:"apilimitmax"`
	AllowUserCreateProjects                      bool   `json:"allowusercreateprojects"`
	AllowUserExpungeRecoverVM                    bool   `json:"allowuserexpungerecovervm"`
	AllowUserExpungeRecoverVolume                bool   `json:"allowuserexpungerecovervolume"`
	AllowUserViewAllDomainAccounts               bool   `json:"allowuserviewalldomainaccounts"`
	AllowUserViewDestroyedVM                     bool   `json:"allowuserviewdestroyedvm"`
	CustomDiskOfferingMaxSize                    int64  `json:"customdiskofferingmaxsize"`
	CustomDiskOfferingMinSize                    int64  `json:"customdiskofferingminsize"`
	DefaultUIPageSize                            int64  `json:"defaultuipagesize"`
	DynamicRolesEnabled                          bool   `json:"dynamicrolesenabled"`
	InstancesDisksStatsRetentionEnabled          bool   `json:"instancesdisksstatsretentionenabled"`
	InstancesDisksStatsRetentionTime             int    `json:"instancesdisksstatsretentiontime"`
	InstancesStatsRetentionTime                  int    `json:"instancesstatsretentiontime"`
	InstancesStatsUserOnly                       bool   `json:"instancesstatsuseronly"`
	KubernetesClusterExperimentalFeaturesEnabled bool   `json:"kubernetesclusterexperimentalfeaturesenabled"`
	KubernetesServiceEnabled                     bool   `json:"kubernetesserviceenabled"`
	ProjectInviteRequired                        bool   `json:"projectinviterequired"`
	RegionSecondaryEnabled                       bool   `json:"regionsecondaryenabled"`
	SupportELB                                   string `json:"supportELB"`
}

func listCapabilities(c *Call) (any, error) {
	// The rate limit is per second with a burst; CloudStack's is a count per
	// interval: report the burst per one-second interval.
	interval, max := 0, 0
	if c.S.Cfg.RateLimit > 0 {
		interval, max = 1, int(c.S.Cfg.RateLimit)
		if c.S.Cfg.RateBurst > max {
			max = c.S.Cfg.RateBurst
		}
	}
	return Object{"capability": Capability{
		CloudStackVersion:             CloudStackVersion,
		SecurityGroupsEnabled:         false,
		UserPublicTemplateEnabled:     true,
		KVMSnapshotEnabled:            true,
		APILimitInterval:              interval,
		APILimitMax:                   max,
		AllowUserCreateProjects:       true,
		AllowUserExpungeRecoverVolume: true,
		CustomDiskOfferingMaxSize:     1024,
		CustomDiskOfferingMinSize:     1,
		DefaultUIPageSize:             20,
		DynamicRolesEnabled:           true,
		InstancesStatsRetentionTime:   720,
		SupportELB:                    "false",
	}}, nil
}

// ---- management servers ----

var msFields = []Field{
	{"id", "string", "the ID of the management server"},
	{"name", "string", "the name of the management server"},
	{"state", "string", "the state of the management server"},
	{"version", "string", "the version of the management server (semver)"},
	{"serviceip", "string", "the IP address the management server answers at"},
	{"lastserverstart", "date", "the last time this management server was started"},
	{"collectiontime", "date", "the time these statistics were collected"},
	{"availableprocessors", "integer", "the number of processors available"},
	{"heapmemoryused", "long", "the heap memory in use, in bytes"},
	{"heapmemorytotal", "long", "the heap memory reserved, in bytes"},
	{"threadstotalcount", "integer", "the number of goroutines"},
}

// ManagementServerMetrics is one server as listManagementServersMetrics
// shows it (cloudstack-go ManagementServersMetric).
type ManagementServerMetrics struct {
	ID                   string    `json:"id"`
	Name                 string    `json:"name"`
	State                string    `json:"state"`
	Version              string    `json:"version"`
	ServiceIP            string    `json:"serviceip"`
	LastServerStart      string    `json:"lastserverstart"`
	CollectionTime       string    `json:"collectiontime"`
	AvailableProcessors  int       `json:"availableprocessors"`
	HeapMemoryUsed       int64     `json:"heapmemoryused"`
	HeapMemoryTotal      int64     `json:"heapmemorytotal"`
	JavaDistribution     string    `json:"javadistribution"`
	JavaVersion          string    `json:"javaversion"`
	OSDistribution       string    `json:"osdistribution"`
	KernelVersion        string    `json:"kernelversion"`
	AgentCount           int       `json:"agentcount"`
	Sessions             int64     `json:"sessions"`
	ThreadsTotalCount    int       `json:"threadstotalcount"`
	ThreadsRunnableCount int       `json:"threadsrunnablecount"`
	DBIsLocal            bool      `json:"dbislocal"`
	UsageIsLocal         bool      `json:"usageislocal"`
	SystemLoadAverages   []float64 `json:"systemloadaverages,omitempty"`
}

func listManagementServersMetrics(c *Call) (any, error) {
	host, _ := os.Hostname()
	id := uuid.NewSHA1(uuid.NameSpaceOID, []byte("nimbus-server/"+host+"/"+c.S.Cfg.Listen)).String()
	if (c.Has("id") && c.Str("id") != id) || (c.Has("name") && c.Str("name") != host) {
		return List{Key: "managementserver"}, nil
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	sessions, _ := c.S.DB.NewSelect().Model((*models.Session)(nil)).Where("expires > ?", models.Now()).Count(c.Ctx)
	m := ManagementServerMetrics{
		ID: id, Name: host, State: "Up", Version: Version, ServiceIP: c.S.Cfg.Listen,
		LastServerStart: FormatTime(c.S.started), CollectionTime: FormatTime(time.Now()),
		AvailableProcessors: runtime.NumCPU(), HeapMemoryUsed: int64(ms.HeapAlloc), HeapMemoryTotal: int64(ms.HeapSys),
		JavaDistribution: "Go", JavaVersion: runtime.Version(), OSDistribution: runtime.GOOS + "/" + runtime.GOARCH,
		Sessions: int64(sessions), ThreadsTotalCount: runtime.NumGoroutine(), ThreadsRunnableCount: runtime.NumGoroutine(),
		DBIsLocal: c.S.DB.Dialect().Name().String() == "sqlite",
	}
	return List{Key: "managementserver", Count: 1, Items: []ManagementServerMetrics{m}}, nil
}
