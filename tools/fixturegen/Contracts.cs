// Data contracts carrying Microsoft.Xrm.Sdk's public names and namespaces, so that the .NET
// serializers (run here through Mono) read our JSON fixtures and write the same contexts as
// DataContractSerializer XML and as .NET Binary XML. Members are listed alphabetically, the
// order DataContractSerializer uses when none is given.
using System;
using System.Collections.Generic;
using System.Runtime.Serialization;

namespace FixtureGen
{
    static class Ns
    {
        public const string Xrm = "http://schemas.microsoft.com/xrm/2011/Contracts";
    }

    [CollectionDataContract(Name = "ParameterCollection", Namespace = Ns.Xrm)]
    public class ParameterCollection : List<KeyValuePair<string, object>> { }

    [CollectionDataContract(Name = "AttributeCollection", Namespace = Ns.Xrm)]
    public class AttributeCollection : List<KeyValuePair<string, object>> { }

    [CollectionDataContract(Name = "FormattedValueCollection", Namespace = Ns.Xrm)]
    public class FormattedValueCollection : List<KeyValuePair<string, string>> { }

    [CollectionDataContract(Name = "KeyAttributeCollection", Namespace = Ns.Xrm)]
    public class KeyAttributeCollection : List<KeyValuePair<string, object>> { }

    [CollectionDataContract(Name = "EntityImageCollection", Namespace = Ns.Xrm)]
    public class EntityImageCollection : List<KeyValuePair<string, Entity>> { }

    [CollectionDataContract(Name = "RelatedEntityCollection", Namespace = Ns.Xrm)]
    public class RelatedEntityCollection : List<KeyValuePair<Relationship, EntityCollection>> { }

    [CollectionDataContract(Name = "OptionSetValueCollection", Namespace = Ns.Xrm)]
    public class OptionSetValueCollection : List<OptionSetValue> { }

    [CollectionDataContract(Name = "EntityReferenceCollection", Namespace = Ns.Xrm)]
    public class EntityReferenceCollection : List<EntityReference> { }

    [DataContract(Name = "EntityState", Namespace = Ns.Xrm)]
    public enum EntityState { [EnumMember] Unchanged = 0, [EnumMember] Created = 1, [EnumMember] Changed = 2 }

    [DataContract(Name = "EntityRole", Namespace = Ns.Xrm)]
    public enum EntityRole { [EnumMember] Referencing = 0, [EnumMember] Referenced = 1 }

    [DataContract(Name = "Entity", Namespace = Ns.Xrm)]
    public class Entity
    {
        [DataMember] public AttributeCollection Attributes = new AttributeCollection();
        [DataMember] public EntityState? EntityState;
        [DataMember] public FormattedValueCollection FormattedValues = new FormattedValueCollection();
        [DataMember] public Guid Id;
        [DataMember] public KeyAttributeCollection KeyAttributes = new KeyAttributeCollection();
        [DataMember] public string LogicalName;
        [DataMember] public RelatedEntityCollection RelatedEntities = new RelatedEntityCollection();
        [DataMember] public string RowVersion;
    }

    [DataContract(Name = "EntityReference", Namespace = Ns.Xrm)]
    public class EntityReference
    {
        [DataMember] public Guid Id;
        [DataMember] public KeyAttributeCollection KeyAttributes = new KeyAttributeCollection();
        [DataMember] public string LogicalName;
        [DataMember] public string Name;
        [DataMember] public string RowVersion;
    }

    [DataContract(Name = "OptionSetValue", Namespace = Ns.Xrm)]
    public class OptionSetValue { [DataMember] public int Value; }

    [DataContract(Name = "Money", Namespace = Ns.Xrm)]
    public class Money { [DataMember] public decimal Value; }

    [DataContract(Name = "EntityCollection", Namespace = Ns.Xrm)]
    public class EntityCollection
    {
        [DataMember] public List<Entity> Entities = new List<Entity>();
        [DataMember] public string EntityName;
        [DataMember] public string MinActiveRowVersion;
        [DataMember] public bool MoreRecords;
        [DataMember] public string PagingCookie;
        [DataMember] public int TotalRecordCount;
        [DataMember] public bool TotalRecordCountLimitExceeded;
    }

    [DataContract(Name = "AliasedValue", Namespace = Ns.Xrm)]
    public class AliasedValue
    {
        [DataMember] public string AttributeLogicalName;
        [DataMember] public string EntityLogicalName;
        [DataMember] public bool NeedFormatting;
        [DataMember] public string ReturnType;
        [DataMember] public object Value;
    }

    [DataContract(Name = "Relationship", Namespace = Ns.Xrm)]
    public class Relationship
    {
        [DataMember] public EntityRole? PrimaryEntityRole;
        [DataMember] public string SchemaName;
    }

    [DataContract(Name = "BooleanManagedProperty", Namespace = Ns.Xrm)]
    public class BooleanManagedProperty
    {
        [DataMember] public bool CanBeChanged;
        [DataMember] public string ManagedPropertyLogicalName;
        [DataMember] public bool Value;
    }

    [DataContract(Name = "ColumnSet", Namespace = Ns.Xrm)]
    public class ColumnSet
    {
        [DataMember] public bool AllColumns;
        [DataMember] public List<object> AttributeExpressions = new List<object>();
        [DataMember] public List<string> Columns = new List<string>();
    }

    [DataContract(Name = "ConditionExpression", Namespace = Ns.Xrm)]
    public class ConditionExpression
    {
        [DataMember] public string AttributeName;
        [DataMember] public bool CompareColumns;
        [DataMember] public string EntityName;
        [DataMember] public int Operator;
        [DataMember] public List<object> Values = new List<object>();
    }

    [DataContract(Name = "FilterExpression", Namespace = Ns.Xrm)]
    public class FilterExpression
    {
        [DataMember] public List<ConditionExpression> Conditions = new List<ConditionExpression>();
        [DataMember] public int FilterOperator;
        [DataMember] public List<FilterExpression> Filters = new List<FilterExpression>();
        [DataMember] public bool IsQuickFindFilter;
    }

    [DataContract(Name = "OrderExpression", Namespace = Ns.Xrm)]
    public class OrderExpression
    {
        [DataMember] public string Alias;
        [DataMember] public string AttributeName;
        [DataMember] public string EntityName;
        [DataMember] public int OrderType;
    }

    [DataContract(Name = "PagingInfo", Namespace = Ns.Xrm)]
    public class PagingInfo
    {
        [DataMember] public int Count;
        [DataMember] public int PageNumber;
        [DataMember] public string PagingCookie;
        [DataMember] public bool ReturnTotalRecordCount;
    }

    [DataContract(Name = "QueryExpression", Namespace = Ns.Xrm)]
    public class QueryExpression
    {
        [DataMember] public ColumnSet ColumnSet;
        [DataMember] public FilterExpression Criteria;
        [DataMember] public bool Distinct;
        [DataMember] public string EntityName;
        [DataMember] public List<object> LinkEntities = new List<object>();
        [DataMember] public bool NoLock;
        [DataMember] public List<OrderExpression> Orders = new List<OrderExpression>();
        [DataMember] public PagingInfo PageInfo;
        [DataMember] public string QueryHints;
        [DataMember] public QueryExpression SubQueryExpression;
        [DataMember] public int? TopCount;
    }

    [DataContract(Name = "RemoteExecutionContext", Namespace = Ns.Xrm)]
    [KnownType(typeof(Entity))]
    [KnownType(typeof(EntityReference))]
    [KnownType(typeof(OptionSetValue))]
    [KnownType(typeof(Money))]
    [KnownType(typeof(EntityCollection))]
    [KnownType(typeof(AliasedValue))]
    [KnownType(typeof(Relationship))]
    [KnownType(typeof(BooleanManagedProperty))]
    [KnownType(typeof(QueryExpression))]
    [KnownType(typeof(OptionSetValueCollection))]
    [KnownType(typeof(EntityReferenceCollection))]
    [KnownType(typeof(KeyValuePair<string, string>))]
    [KnownType(typeof(KeyValuePair<string, string>[]))]
    [KnownType(typeof(object[]))]
    [KnownType(typeof(string[]))]
    [KnownType(typeof(Guid))]
    [KnownType(typeof(DateTime))]
    [KnownType(typeof(decimal))]
    [KnownType(typeof(double))]
    [KnownType(typeof(long))]
    public class RemoteExecutionContext
    {
        [DataMember] public Guid BusinessUnitId;
        [DataMember] public Guid CorrelationId;
        [DataMember] public int Depth;
        [DataMember(EmitDefaultValue = false)] public string InitiatingUserAgent;
        [DataMember(EmitDefaultValue = false)] public Guid InitiatingUserAzureActiveDirectoryObjectId;
        [DataMember] public Guid InitiatingUserId;
        [DataMember] public ParameterCollection InputParameters = new ParameterCollection();
        [DataMember] public bool IsExecutingOffline;
        [DataMember] public bool IsInTransaction;
        [DataMember] public bool IsOfflinePlayback;
        [DataMember] public int IsolationMode;
        [DataMember] public string MessageName;
        [DataMember] public int Mode;
        [DataMember] public DateTime OperationCreatedOn;
        [DataMember] public Guid OperationId;
        [DataMember] public Guid OrganizationId;
        [DataMember] public string OrganizationName;
        [DataMember] public ParameterCollection OutputParameters = new ParameterCollection();
        [DataMember] public EntityReference OwningExtension;
        [DataMember] public RemoteExecutionContext ParentContext;
        [DataMember] public EntityImageCollection PostEntityImages = new EntityImageCollection();
        [DataMember] public EntityImageCollection PreEntityImages = new EntityImageCollection();
        [DataMember] public Guid PrimaryEntityId;
        [DataMember] public string PrimaryEntityName;
        [DataMember] public Guid? RequestId;
        [DataMember] public string SecondaryEntityName;
        [DataMember] public ParameterCollection SharedVariables = new ParameterCollection();
        [DataMember] public int Stage;
        [DataMember(EmitDefaultValue = false)] public Guid UserAzureActiveDirectoryObjectId;
        [DataMember] public Guid UserId;
    }
}
