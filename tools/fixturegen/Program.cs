// Reads each JSON fixture named on the command line with DataContractJsonSerializer (the
// serializer Dataverse uses for the JSON format) and writes the same context beside it as
// DataContractSerializer XML (.xml), as .NET Binary XML (.msbin1), and as .NET Binary XML with
// dictionary strings and typed values (.dictionary.msbin1, see Transcode.cs). With
// --dictionary PATH it first writes that dictionary as a Python module.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Runtime.Serialization;
using System.Runtime.Serialization.Json;
using System.Xml;

namespace FixtureGen
{
    static class Program
    {
        static int Main(string[] args)
        {
            var dictionary = StaticDictionary.Load();
            int first = 0;
            if (args.Length > 1 && args[0] == "--dictionary")
            {
                StaticDictionary.WritePython(dictionary, args[1]);
                first = 2;
            }
            foreach (var path in args.Skip(first))
            {
                RemoteExecutionContext context;
                using (var input = File.OpenRead(path))
                    context = (RemoteExecutionContext)new DataContractJsonSerializer(typeof(RemoteExecutionContext)).ReadObject(input);
                Retype(context);
                var serializer = new DataContractSerializer(typeof(RemoteExecutionContext));
                var stem = Path.ChangeExtension(path, null);
                using (var output = File.Create(stem + ".xml"))
                using (var writer = XmlDictionaryWriter.CreateTextWriter(output))
                    serializer.WriteObject(writer, context);
                using (var output = File.Create(stem + ".msbin1"))
                using (var writer = XmlDictionaryWriter.CreateBinaryWriter(output))
                    serializer.WriteObject(writer, context);
                Transcode.Run(stem + ".xml", stem + ".dictionary.msbin1", dictionary);
                Console.WriteLine("wrote " + stem + ".xml, .msbin1 and .dictionary.msbin1");
            }
            return 0;
        }

        // The JSON format loses .NET types that the XML formats keep (a Guid is a bare string, a
        // multi-select choice a bare array). Put back the types Dataverse itself would hold.
        static void Retype(RemoteExecutionContext context)
        {
            if (context == null) return;
            RetypeAll(context.InputParameters);
            RetypeAll(context.OutputParameters);
            RetypeAll(context.SharedVariables);
            foreach (var image in context.PreEntityImages.Concat(context.PostEntityImages)) RetypeEntity(image.Value);
            if (context.OwningExtension != null) RetypeAll(context.OwningExtension.KeyAttributes);
            Retype(context.ParentContext);
        }

        static void RetypeAll(List<KeyValuePair<string, object>> pairs)
        {
            for (int i = 0; i < pairs.Count; i++)
                pairs[i] = new KeyValuePair<string, object>(pairs[i].Key, RetypeValue(pairs[i].Value));
        }

        static void RetypeEntity(Entity entity)
        {
            if (entity == null) return;
            RetypeAll(entity.Attributes);
            RetypeAll(entity.KeyAttributes);
        }

        // "/Date(ms)/" or "/Date(ms+zzzz)/": milliseconds since the Unix epoch, in UTC.
        static DateTime ParseJsonDate(string text)
        {
            var body = text.Substring(6, text.Length - 8);
            int sign = body.IndexOfAny(new[] { '+', '-' }, 1);
            long ms = long.Parse(sign > 0 ? body.Substring(0, sign) : body);
            return new DateTime(1970, 1, 1, 0, 0, 0, DateTimeKind.Utc).AddMilliseconds(ms);
        }

        static object RetypeValue(object value)
        {
            var text = value as string;
            if (text != null)
            {
                Guid guid;
                if (text.Length == 36 && Guid.TryParseExact(text, "D", out guid)) return guid;
                if (text.StartsWith("/Date(") && text.EndsWith(")/")) return ParseJsonDate(text);
                return text;
            }
            var entity = value as Entity;
            if (entity != null) { RetypeEntity(entity); return entity; }
            var collection = value as EntityCollection;
            if (collection != null)
            {
                foreach (var item in collection.Entities) RetypeEntity(item);
                return collection;
            }
            var items = value as object[];
            if (items == null || items.Length == 0) return value;
            if (items.All(x => x is OptionSetValue))
            {
                var choices = new OptionSetValueCollection();
                choices.AddRange(items.Cast<OptionSetValue>());
                return choices;
            }
            if (items.All(x => x is EntityReference))
            {
                var references = new EntityReferenceCollection();
                references.AddRange(items.Cast<EntityReference>());
                return references;
            }
            if (items.All(x => x is KeyValuePair<string, string>)) return items.Cast<KeyValuePair<string, string>>().ToArray();
            if (items.All(x => x is string)) return items.Cast<string>().ToArray();
            return value;
        }
    }
}
