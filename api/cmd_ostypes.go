package api

import (
	"errors"
	"strings"

	"github.com/uptrace/bun"

	"github.com/nimbus-cloud/nimbus/models"
)

func init() {
	Register(
		&Command{
			Name: "listOsTypes", Description: "Lists the guest OS types", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the OS type"},
				Param{Name: "oscategoryid", Type: TUUID, Description: "OS types of this category"},
				Param{Name: "description", Type: TString, Description: "OS types whose description contains this text"},
				Param{Name: "fordisplay", Type: TBoolean, Description: "only OS types shown to users (true) or hidden ones (false)"},
			),
			ResponseName: "ostype", Response: osTypeFields, Handler: listOsTypes,
		},
		&Command{
			Name: "listOsCategories", Description: "Lists the categories of guest OS types", Access: AccessAll,
			Params: append(ListParams(),
				Param{Name: "id", Type: TUUID, Description: "the ID of the category"},
				Param{Name: "name", Type: TString, Description: "the name of the category"},
			),
			ResponseName: "oscategory", Response: osCategoryFields, Handler: listOsCategories,
		},
	)
}

var osTypeFields = []Field{
	{"id", "string", "the ID of the OS type"}, {"name", "string", "its name"},
	{"description", "string", "its display name"}, {"oscategoryid", "string", "the ID of its category"},
	{"oscategoryname", "string", "the name of its category"}, {"isuserdefined", "boolean", "added by an admin rather than shipped"},
	{"fordisplay", "boolean", "shown to users"},
}

var osCategoryFields = []Field{{"id", "string", "the ID of the category"}, {"name", "string", "its name"}}

// OSTypeView is an OS type as listOsTypes shows it (the SDK's OsType).
type OSTypeView struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	Description    string `json:"description"`
	OSCategoryID   string `json:"oscategoryid"`
	OSCategoryName string `json:"oscategoryname"`
	IsUserDefined  bool   `json:"isuserdefined"`
	ForDisplay     bool   `json:"fordisplay"`
}

// OSCategoryView is an OS category as listOsCategories shows it.
type OSCategoryView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// osTypeRow is an OS type joined with its category.
type osTypeRow struct {
	models.OSType `bun:",extend"`
	CategoryUUID  string `bun:"category_uuid"`
	CategoryName  string `bun:"category_name"`
}

func listOsTypes(c *Call) (any, error) {
	var rows []osTypeRow
	q := c.S.DB.NewSelect().Model(&rows).
		ColumnExpr("os_type.*").
		ColumnExpr("cat.uuid AS category_uuid, cat.name AS category_name").
		Join("LEFT JOIN os_categories AS cat ON cat.id = os_type.category_id").
		OrderExpr("os_type.id ASC")
	q = c.Filtered(q, Filter{ID: "os_type.uuid", Keyword: []string{"os_type.display_name"}})
	if c.Has("oscategoryid") {
		q = q.Where("cat.uuid = ?", c.Str("oscategoryid"))
	}
	if d := c.Str("description"); d != "" {
		q = q.Where("LOWER(os_type.display_name) LIKE ? ESCAPE '!'", "%"+likeEscape(strings.ToLower(d))+"%")
	}
	if b := c.BoolPtr("fordisplay"); b != nil {
		q = q.Where("os_type.display = ?", *b)
	}
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views := make([]OSTypeView, len(rows))
	for i, r := range rows {
		views[i] = OSTypeView{
			ID: r.UUID, Name: r.Name, Description: r.DisplayName,
			OSCategoryID: r.CategoryUUID, OSCategoryName: r.CategoryName,
			IsUserDefined: r.IsUserDefined, ForDisplay: r.ForDisplay,
		}
		if views[i].Name == "" {
			views[i].Name = r.DisplayName
		}
	}
	return List{Key: "ostype", Count: n, Items: views}, nil
}

func listOsCategories(c *Call) (any, error) {
	var rows []models.OSCategory
	q := c.S.DB.NewSelect().Model(&rows).Order("id ASC")
	q = c.Filtered(q, Filter{ID: "uuid", Name: "name", Keyword: []string{"name"}})
	n, err := c.ScanPage(q)
	if err != nil {
		return nil, err
	}
	views := make([]OSCategoryView, len(rows))
	for i, r := range rows {
		views[i] = OSCategoryView{ID: r.UUID, Name: r.Name}
	}
	return List{Key: "oscategory", Count: n, Items: views}, nil
}

// osTypeByUUID loads a live OS type, or nil when there is none.
func (c *Call) osTypeByUUID(db bun.IDB, id string) (*models.OSType, error) {
	var t models.OSType
	err := db.NewSelect().Model(&t).Where("uuid = ?", id).Limit(1).Scan(c.Ctx)
	if err != nil {
		if errors.Is(models.NotFound(err, ""), models.ErrNotFound) {
			return nil, nil
		}
		return nil, err
	}
	return &t, nil
}
