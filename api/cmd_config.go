package api

import (
	"strings"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	scopeParams := []Param{
		{Name: "zoneid", Type: TUUID, Description: "settings of zone scope (global values for now)"},
		{Name: "clusterid", Type: TUUID, Description: "settings of cluster scope (global values for now)"},
		{Name: "storageid", Type: TUUID, Description: "settings of storage pool scope (global values for now)"},
		{Name: "accountid", Type: TUUID, Description: "settings of account scope (global values for now)"},
		{Name: "domainid", Type: TUUID, Description: "settings of domain scope (global values for now)"},
		{Name: "imagestoreuuid", Type: TUUID, Description: "settings of image store scope (global values for now)"},
	}
	Register(
		&Command{
			Name: "listConfigurations", Description: "Lists the global settings", Access: AccessRootAdmin,
			Params: append(append(ListParams(),
				Param{Name: "name", Type: TString, Description: "settings whose name contains this"},
				Param{Name: "category", Type: TString, Description: "settings of this category"},
				Param{Name: "group", Type: TString, Description: "ignored"},
				Param{Name: "subgroup", Type: TString, Description: "ignored"},
				Param{Name: "parent", Type: TString, Description: "ignored"},
			), scopeParams...),
			ResponseName: "configuration", Response: configurationFields, Handler: listConfigurations,
		},
		&Command{
			Name: "updateConfiguration", Description: "Updates a global setting", Access: AccessRootAdmin,
			Params: append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the setting"},
				{Name: "value", Type: TString, Length: 4096, Description: "the new value, of the setting's type"},
			}, scopeParams...),
			ResponseName: "configuration", Response: configurationFields, Handler: updateConfiguration,
		},
		&Command{
			Name: "resetConfiguration", Description: "Resets a global setting to its default value", Access: AccessRootAdmin,
			Params: append([]Param{
				{Name: "name", Type: TString, Required: true, Description: "the name of the setting"},
				{Name: "imagestoreid", Type: TUUID, Description: "per image store values are not supported yet"},
			}, scopeParams...),
			ResponseName: "configuration", Response: configurationFields, Handler: resetConfiguration,
		},
	)
}

var configurationFields = []Field{
	{"name", "string", "the name of the setting"},
	{"value", "string", "its value"},
	{"defaultvalue", "string", "its default value"},
	{"category", "string", "its category"},
	{"description", "string", "what it does"},
	{"scope", "string", "the scope it may be set at (global, zone, cluster, account, domain)"},
	{"type", "string", "Boolean, Number, Decimal or String"},
	{"isdynamic", "boolean", "whether a change applies without a restart"},
	{"component", "string", "the component that reads it"},
}

// ConfigurationView is a setting as the SDK's Configuration decodes it.
type ConfigurationView struct {
	Name         string `json:"name"`
	Value        string `json:"value"`
	DefaultValue string `json:"defaultvalue"`
	Category     string `json:"category"`
	Description  string `json:"description"`
	Scope        string `json:"scope"`
	Type         string `json:"type"`
	IsDynamic    bool   `json:"isdynamic"`
	Component    string `json:"component"`
	DisplayText  string `json:"displaytext,omitempty"`
}

func configurationView(c *models.Configuration) ConfigurationView {
	return ConfigurationView{
		Name: c.Name, Value: c.Value, DefaultValue: c.DefaultValue, Category: c.Category, Description: c.Description,
		Scope: c.Scope, Type: models.ConfigType(c.DefaultValue), IsDynamic: true, Component: "management-server",
		DisplayText: c.Name,
	}
}

// configScope is the scope a request's scope parameter names ("" for
// global).
func configScope(c *Call) string {
	for param, scope := range map[string]string{
		"zoneid": "zone", "clusterid": "cluster", "storageid": "storagepool", "accountid": "account",
		"domainid": "domain", "imagestoreuuid": "imagestore", "imagestoreid": "imagestore",
	} {
		if c.Has(param) {
			return scope
		}
	}
	return ""
}

func listConfigurations(c *Call) (any, error) {
	var rows []models.Configuration
	q := c.S.DB.NewSelect().Model(&rows)
	if c.Has("name") {
		q = q.Where("LOWER(configuration.name) LIKE ? ESCAPE '!'", "%"+likeEscape(strings.ToLower(c.Str("name")))+"%")
	}
	if c.Has("category") {
		q = q.Where("LOWER(configuration.category) = ?", strings.ToLower(c.Str("category")))
	}
	if s := configScope(c); s != "" {
		// Per-scope values are not stored yet: list the settings of that
		// scope with their global values.
		q = q.Where("configuration.scope = ?", s)
	}
	q = c.Filtered(q, Filter{Keyword: []string{"configuration.name", "configuration.description", "configuration.category"}}).
		Order("configuration.name")
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views := make([]ConfigurationView, 0, len(rows))
	for i := range rows {
		views = append(views, configurationView(&rows[i]))
	}
	return List{Key: "configuration", Count: n, Items: views}, nil
}

// configByName loads a setting, 431 when unknown.
func (c *Call) configByName(name string) (*models.Configuration, error) {
	var row models.Configuration
	if err := c.S.DB.NewSelect().Model(&row).Where("name = ?", name).Limit(1).Scan(c.Ctx); err != nil {
		if isNoRows(err) {
			return nil, cserr.Param("Configuration %s does not exist", clip(name, 128))
		}
		return nil, err
	}
	return &row, nil
}

func setConfiguration(c *Call, row *models.Configuration, value, event string) (any, error) {
	if s := configScope(c); s != "" {
		return nil, cserr.Param("Values per %s are not supported yet; only global values may be set", s)
	}
	if err := checkScheduleSetting(row.Name, value); err != nil {
		return nil, err
	}
	if _, err := c.S.DB.NewUpdate().Model((*models.Configuration)(nil)).Set("value = ?", value).Set("updated = ?", models.Now()).
		Where("id = ?", row.ID).Exec(c.Ctx); err != nil {
		return nil, err
	}
	models.InvalidateConfig(row.Name)
	followScheduleSetting(c, row.Name, value)
	row.Value = value
	c.Event(event, "Configuration", "", "Set "+row.Name+" to "+clip(value, 256))
	return Object{"configuration": configurationView(row)}, nil
}

func updateConfiguration(c *Call) (any, error) {
	row, err := c.configByName(c.Str("name"))
	if err != nil {
		return nil, err
	}
	if !c.Has("value") {
		return nil, cserr.Param("Unable to execute API command updateconfiguration due to missing parameter value")
	}
	value, err := models.CheckConfigValue(row, c.Str("value"))
	if err != nil {
		return nil, cserr.Param("%s", err.Error())
	}
	return setConfiguration(c, row, value, "CONFIGURATION.VALUE.EDIT")
}

func resetConfiguration(c *Call) (any, error) {
	row, err := c.configByName(c.Str("name"))
	if err != nil {
		return nil, err
	}
	return setConfiguration(c, row, row.DefaultValue, "CONFIGURATION.VALUE.EDIT")
}
