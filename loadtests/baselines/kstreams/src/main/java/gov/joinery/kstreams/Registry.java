package gov.joinery.kstreams;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;

/**
 * Writer schemas by id from a Confluent-compatible schema registry
 * ({@code GET /schemas/ids/{id}}), cached for the life of the process, as
 * Joinery's registry client does.
 */
public final class Registry {
    /** The registry does not know the id: a poison record (dead letter), not worth a retry. */
    public static final class UnknownSchemaId extends Exception {
        UnknownSchemaId(int id) {
            super("schema id " + id + " is not in the registry");
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private final String base;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private final ConcurrentHashMap<Integer, Schema> cache = new ConcurrentHashMap<>();

    public Registry(String baseUrl) {
        this.base = baseUrl.endsWith("/") ? baseUrl.substring(0, baseUrl.length() - 1) : baseUrl;
    }

    /**
     * The writer schema of an id. Retries (every second) while the registry
     * cannot be reached or answers with a server error, as Joinery's
     * processor does; gives up on a 404.
     */
    public Schema schema(int id) throws UnknownSchemaId, InterruptedException {
        Schema s = cache.get(id);
        if (s != null) {
            return s;
        }
        while (true) {
            try {
                HttpResponse<String> resp = http.send(
                        HttpRequest.newBuilder(URI.create(base + "/schemas/ids/" + id))
                                .timeout(Duration.ofSeconds(10))
                                .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
                                .GET().build(),
                        HttpResponse.BodyHandlers.ofString());
                if (resp.statusCode() == 404) {
                    throw new UnknownSchemaId(id);
                }
                if (resp.statusCode() == 200) {
                    JsonNode node = JSON.readTree(resp.body()).get("schema");
                    if (node == null || !node.isTextual()) {
                        throw new IllegalStateException("registry answer for id " + id + " has no schema string");
                    }
                    Schema parsed = new Schema.Parser().parse(node.asText());
                    Schema prev = cache.putIfAbsent(id, parsed);
                    return prev != null ? prev : parsed;
                }
                System.err.println("kstreams: registry answered " + resp.statusCode() + " for schema id " + id
                        + "; retrying");
            } catch (IOException e) {
                System.err.println("kstreams: registry unreachable (" + e + "); retrying");
            }
            Thread.sleep(1000);
        }
    }
}
