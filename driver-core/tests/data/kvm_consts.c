/* Prints the KVM request codes and struct sizes driver-core's kvm table must match.
 * Regenerate kvm_expected.txt with:
 *   gcc -o /tmp/kvm_consts kvm_consts.c && /tmp/kvm_consts > kvm_expected.txt
 * (the test `kvm_codes_match_c` also compiles and runs this when gcc is available). */
#include <stdio.h>
#include <linux/kvm.h>

#define C(x) printf("code %s 0x%08lx\n", #x, (unsigned long)(x))
#define S(x) printf("size %s %zu\n", #x, sizeof(struct x))

int main(void)
{
	C(KVM_GET_API_VERSION);
	C(KVM_CREATE_VM);
	C(KVM_CHECK_EXTENSION);
	C(KVM_GET_VCPU_MMAP_SIZE);
	C(KVM_GET_SUPPORTED_CPUID);
	C(KVM_CREATE_VCPU);
	C(KVM_GET_DIRTY_LOG);
	C(KVM_SET_USER_MEMORY_REGION);
	C(KVM_SET_TSS_ADDR);
	C(KVM_CREATE_IRQCHIP);
	C(KVM_RUN);
	C(KVM_GET_REGS);
	C(KVM_SET_REGS);
	C(KVM_GET_SREGS);
	C(KVM_SET_SREGS);
	C(KVM_SET_CPUID2);
	S(kvm_userspace_memory_region);
	S(kvm_dirty_log);
	S(kvm_regs);
	S(kvm_segment);
	S(kvm_dtable);
	S(kvm_sregs);
	S(kvm_cpuid2);
	S(kvm_cpuid_entry2);
	printf("cap KVM_CAP_USER_MEMORY %d\n", KVM_CAP_USER_MEMORY);
	printf("cap KVM_CAP_NR_VCPUS %d\n", KVM_CAP_NR_VCPUS);
	printf("cap KVM_CAP_MAX_VCPUS %d\n", KVM_CAP_MAX_VCPUS);
	printf("cap KVM_CAP_IMMEDIATE_EXIT %d\n", KVM_CAP_IMMEDIATE_EXIT);
	printf("cap KVM_CAP_IRQCHIP %d\n", KVM_CAP_IRQCHIP);
	printf("cap KVM_CAP_SET_TSS_ADDR %d\n", KVM_CAP_SET_TSS_ADDR);
	printf("cap KVM_CAP_EXT_CPUID %d\n", KVM_CAP_EXT_CPUID);
	printf("cap KVM_CAP_MAX_VCPU_ID %d\n", KVM_CAP_MAX_VCPU_ID);
	return 0;
}
