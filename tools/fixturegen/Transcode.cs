// Rewrites a DataContractSerializer XML document as .NET binary XML through the binary writer,
// taking names and namespaces from the static dictionary where it has them and writing values
// with their types (xsi:type, or the member's known type), so the output exercises dictionary
// records, QName records and the typed text records: Int32, Int64, Bool, Decimal, Double,
// DateTime (UTC and local kinds) and Uuid, besides Chars.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Xml;

namespace FixtureGen
{
    static class Transcode
    {
        const string Xsi = "http://www.w3.org/2001/XMLSchema-instance";
        static readonly HashSet<string> IntegerMembers = new HashSet<string> { "Depth", "Stage", "Mode", "IsolationMode", "TotalRecordCount" };
        static readonly HashSet<string> DateMembers = new HashSet<string> { "OperationCreatedOn" };

        public static void Run(string xmlPath, string binaryPath, XmlDictionary dictionary)
        {
            using (var reader = XmlReader.Create(xmlPath))
            using (var output = File.Create(binaryPath))
            using (var writer = XmlDictionaryWriter.CreateBinaryWriter(output, dictionary))
            {
                var types = new Stack<string>();
                var names = new Stack<string>();
                while (reader.Read())
                {
                    if (reader.NodeType == XmlNodeType.Element)
                    {
                        bool empty = reader.IsEmptyElement;
                        string name = reader.LocalName;
                        writer.WriteStartElement(reader.Prefix, Find(dictionary, name), Find(dictionary, reader.NamespaceURI));
                        string type = null;
                        if (reader.MoveToFirstAttribute())
                        {
                            do
                            {
                                if (reader.Name == "xmlns" || reader.Prefix == "xmlns")
                                {
                                    writer.WriteXmlnsAttribute(reader.Prefix == "xmlns" ? reader.LocalName : "", Find(dictionary, reader.Value));
                                }
                                else if (reader.NamespaceURI == Xsi && reader.LocalName == "type")
                                {
                                    string value = reader.Value;
                                    int colon = value.IndexOf(':');
                                    string prefix = colon > 0 ? value.Substring(0, colon) : "";
                                    type = colon > 0 ? value.Substring(colon + 1) : value;
                                    writer.WriteStartAttribute(reader.Prefix, Find(dictionary, reader.LocalName), Find(dictionary, reader.NamespaceURI));
                                    writer.WriteQualifiedName(Find(dictionary, type), Find(dictionary, reader.LookupNamespace(prefix)));
                                    writer.WriteEndAttribute();
                                }
                                else
                                {
                                    writer.WriteStartAttribute(reader.Prefix, Find(dictionary, reader.LocalName), Find(dictionary, reader.NamespaceURI));
                                    writer.WriteString(reader.Value);
                                    writer.WriteEndAttribute();
                                }
                            } while (reader.MoveToNextAttribute());
                            reader.MoveToElement();
                        }
                        if (empty) writer.WriteEndElement();
                        else { types.Push(type); names.Push(name); }
                    }
                    else if (reader.NodeType == XmlNodeType.Text)
                    {
                        WriteTyped(writer, types.Peek(), names.Peek(), reader.Value);
                    }
                    else if (reader.NodeType == XmlNodeType.EndElement)
                    {
                        types.Pop();
                        names.Pop();
                        writer.WriteEndElement();
                    }
                }
            }
        }

        static XmlDictionaryString Find(XmlDictionary dictionary, string value)
        {
            XmlDictionaryString found;
            if (value != null && dictionary.TryLookup(value, out found)) return found;
            return new XmlDictionary().Add(value ?? "");
        }

        static void WriteTyped(XmlDictionaryWriter writer, string type, string member, string text)
        {
            var invariant = CultureInfo.InvariantCulture;
            Guid guid;
            if (type == "int" || (type == null && IntegerMembers.Contains(member))) writer.WriteValue(int.Parse(text, invariant));
            else if (type == "long") writer.WriteValue(long.Parse(text, invariant));
            else if (type == "boolean" || (type == null && (text == "true" || text == "false"))) writer.WriteValue(text == "true");
            else if (type == "decimal") writer.WriteValue(decimal.Parse(text, invariant));
            else if (type == "double") writer.WriteValue(double.Parse(text, invariant));
            else if (type == "dateTime" || (type == null && DateMembers.Contains(member)))
                writer.WriteValue(XmlConvert.ToDateTime(text, XmlDateTimeSerializationMode.RoundtripKind));
            else if (type == "guid" || (type == null && text.Length == 36 && Guid.TryParse(text, out guid))) writer.WriteValue(Guid.Parse(text));
            else writer.WriteString(text);
        }
    }
}
