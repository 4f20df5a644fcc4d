"""Store tests: the contract on both adapters, DynamoDB faults and schema, the retry policy."""
